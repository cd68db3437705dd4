"""Peak memory of building an index from encoded shards, by collection size: bounded flushes + streamed
merges (the default) against holding every document until one segment is written (the old behaviour).

    python benchmarks/build_memory.py --sizes 25000,50000,100000 [--encoded DIR ...]

Each build runs in its own process, its memory sampled from /proc (peak anonymous memory and peak RSS).
Writes ``benchmarks/results/build_memory.json``.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from prepare_enwiki import bench_dir  # noqa: E402

REPO = Path(__file__).resolve().parents[1]

# The child: index the first N documents' shards; flush_postings=0 means "never flush before the end".
CHILD = """
import sys, time
from pathlib import Path
from lsr.index import IndexWriter
from lsr.index.merge import compact
from lsr.io.shards import list_shards, read_shard
from lsr.jobs.encode import read_job, read_job_vocabulary
encoded, out, n, flush = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
job = read_job(encoded)
started = time.perf_counter()
with IndexWriter.create(out, read_job_vocabulary(encoded), job["encoder"], overwrite=True,
                        flush_postings=flush or 2**62, segment_docs=2**62) as writer:
    added = 0
    for shard in list_shards(encoded):
        ids, vectors = read_shard(shard)
        take = min(len(ids), n - added)
        writer.add(ids[:take], vectors.slice(0, take))
        added += take
        if added >= n:
            break
compact(out)
print("SECONDS", time.perf_counter() - started)
"""


def build(encoded: Path, n: int, flush: int, out: Path) -> dict:
    """Run one build, sampling /proc every 20 ms: peak anonymous memory (what the build needs) and peak RSS
    (which also counts the pages of memory-mapped segments it read: page cache the kernel can take back)."""
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(encoded), str(out), str(n), str(flush)],
                            stdout=subprocess.PIPE, text=True)
    peak_anon = peak_rss = 0
    status = Path(f"/proc/{proc.pid}/status")
    while proc.poll() is None:
        try:
            fields = dict(line.split(":", 1) for line in status.read_text().splitlines() if ":" in line)
            peak_anon = max(peak_anon, int(fields["RssAnon"].split()[0]))
            peak_rss = max(peak_rss, int(fields["VmHWM"].split()[0]))
        except (OSError, KeyError, ValueError):
            pass
        time.sleep(0.02)
    out_text = proc.stdout.read()
    if proc.returncode:
        raise SystemExit(f"build of {n} documents failed")
    seconds = float(re.search(r"SECONDS ([\d.]+)", out_text).group(1))
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    return {"docs": n, "flush_postings": flush or None, "peak_anon_mib": round(peak_anon / 1024, 1),
            "peak_rss_mib": round(peak_rss / 1024, 1), "seconds": round(seconds, 1),
            "index_mib": round(size / 2**20, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--encoded", type=Path, default=bench_dir() / "enwiki-100k" / "encoded")
    parser.add_argument("--sizes", default="25000,50000,100000")
    parser.add_argument("--flush", type=int, default=16_000_000, help="postings per flushed run (the default)")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(dir=bench_dir()) as tmp:
        for n in [int(x) for x in args.sizes.split(",")]:
            for flush in (args.flush, 0):
                row = build(args.encoded, n, flush, Path(tmp) / f"idx-{n}-{flush}")
                print(row, flush=True)
                rows.append(row)
    report = {"encoded": str(args.encoded), "when": time.strftime("%Y-%m-%d"), "rows": rows}
    (REPO / "benchmarks" / "results" / "build_memory.json").write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
