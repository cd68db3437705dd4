"""Draw a seeded sample of the enwiki-2015 passages and title queries, and encode it with lsr (resumable).

The sample and its vectors are cached outside the repository (``$LSR_BENCH_DIR``, default
``~/.cache/lsr-bench``) because encoding 100k passages takes most of an hour on 2 cores. Rerunning the same
command resumes an interrupted encode.

    python benchmarks/prepare_enwiki.py --docs 100000 --queries 1000
"""

from __future__ import annotations

import argparse
import gzip
import logging
import os
import random
from pathlib import Path

ENWIKI = Path(__file__).resolve().parents[2] / "shared" / "data" / "corpora" / "enwiki-2015"


def bench_dir() -> Path:
    return Path(os.environ.get("LSR_BENCH_DIR", Path.home() / ".cache" / "lsr-bench"))


def sample_lines(path: Path, n: int, seed: int) -> list[str]:
    """A seeded uniform sample of n lines, in file order (the corpus is sorted by page id: never a prefix)."""
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        lines = [line for line in fh if line.strip()]
    if n >= len(lines):
        return lines
    keep = sorted(random.Random(seed).sample(range(len(lines)), n))
    return [lines[i] for i in keep]


def prepare(n_docs: int, n_queries: int, seed: int = 0, model: str = "splade-tiny") -> Path:
    if not ENWIKI.is_dir():
        raise SystemExit(f"enwiki-2015 not found at {ENWIKI}")
    out = bench_dir() / f"enwiki-{n_docs // 1000}k"
    out.mkdir(parents=True, exist_ok=True)
    corpus = out / "corpus.jsonl"
    if not corpus.exists():
        tmp = corpus.with_suffix(".tmp")
        tmp.write_text("".join(sample_lines(ENWIKI / "corpus.jsonl.gz", n_docs, seed)), encoding="utf-8")
        tmp.replace(corpus)
    queries = out / "queries.jsonl"
    if not queries.exists():
        queries.write_text("".join(sample_lines(ENWIKI / "queries.jsonl.gz", n_queries, seed)), encoding="utf-8")
    from lsr.encoders import load_encoder
    from lsr.jobs.encode import encode_corpus

    encode_corpus(corpus, out / "encoded", load_encoder(model), shard_size=2000)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    print(prepare(args.docs, args.queries, args.seed))


if __name__ == "__main__":
    main()
