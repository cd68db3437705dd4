"""Stored weight types: nDCG@10, R@100 and index size of float32 vs integer impacts, per encoder.

    python benchmarks/weights.py [--datasets scifact,nfcorpus]

For each dataset (test split) and encoder (splade-tiny alone; splade+bm25 with the BM25 part's default query
weight) the corpus is encoded once (cached under $LSR_BENCH_DIR/weights/<dataset>/<encoder>/encoded) and
indexed with:
  - float32;
  - uint8, scale from the largest weight seen (the old default for --weights uint8: a later, larger weight
    would be clipped);
  - uint8 and uint16, scale from the encoder's proven weight bound (lsr.index.weight_policy: what --weights
    auto picks: uint8 for one-part encoders, uint16 for hybrids), never clipping.
Each index is searched exactly (k 1000) and evaluated with ir_measures. Where the enwiki-100k exchange folder
is there (benchmarks/scale.py makes it; no qrels), also the share of float32's exact top 10 that each
quantisation keeps over its first 1,000 title queries (a smoother measure than nDCG on a few hundred queries).
Writes benchmarks/results/weights.json
and the table between ``<!-- weights:begin -->`` and ``<!-- weights:end -->`` in benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from hybrid_prf import dataset  # noqa: E402
from prepare_enwiki import bench_dir  # noqa: E402
from scale import machine, machine_line  # noqa: E402
from tables import replace_section  # noqa: E402

from lsr.eval.runner import evaluate_index  # noqa: E402
from lsr.index import open_index  # noqa: E402
from lsr.io.beir import read_qrels, read_queries, split_queries  # noqa: E402

log = logging.getLogger("weights")
ENCODERS = {"splade-tiny": None, "splade+bm25": {"type": "splade+bm25"}}
# label -> IndexWriter storage options ("bound": the encoder's proven bound gives the scale)
STORAGES = {
    "float32": {"weight_dtype": "float32"},
    "uint8, scale from the largest weight seen": {"weight_dtype": "uint8", "observed": True},
    "uint8, scale from the bound": {"weight_dtype": "uint8"},
    "uint16, scale from the bound": {"weight_dtype": "uint16"},
}
MEASURES = ("nDCG@10", "R@100")
AUTO_ROW = "uint8, scale from the bound"  # what --weights auto stores where the encoder has a bound


def encoded(name: str, encoder: str) -> Path:
    """The encode job of ``name`` by ``encoder`` (made once, by a float32 build that keeps its work folder)."""
    from lsr.jobs.build import build_index

    root = bench_dir() / "weights" / name / encoder
    if not (root / "encoded" / "job.json").exists():
        build_index(dataset(name), root / "first-build", model="splade-tiny", overwrite=True,
                    work_dir=root / "encoded", encoder_options=ENCODERS[encoder],
                    storage={"weight_dtype": "float32"})
        shutil.rmtree(root / "first-build")
    return root / "encoded"


def index_bytes(index_dir: Path) -> int:
    return sum(p.stat().st_size for p in index_dir.rglob("*") if p.is_file())


def run(name: str, encoder: str) -> list[dict]:
    from lsr.jobs.build import index_from_shards

    folder = dataset(name)
    qrels = read_qrels(folder, "test")
    queries = split_queries(read_queries(folder), qrels)
    job = encoded(name, encoder)
    rows = []
    for label, storage in STORAGES.items():
        storage = dict(storage)
        observed = storage.pop("observed", False)
        if observed:  # the writer's own rule for an integer type without a bound: the shards' largest weight
            from lsr.io.shards import list_shards, read_shard

            largest = max(float(read_shard(p)[1].values.max(initial=0.0)) for p in list_shards(job))
            storage["scale"] = 255.0 / largest
        out = bench_dir() / "weights" / name / encoder / label.split(",")[0].replace(" ", "") / \
            ("observed" if observed else "bound")
        index_from_shards(job, out / "index", overwrite=True, show_progress=False, storage=storage)
        report = evaluate_index(out / "index", queries, qrels, out, k=1000, measures=MEASURES,
                                show_progress=False)
        weights = open_index(out / "index").manifest.weights
        rows.append({"dataset": name, "encoder": encoder, "storage": label, "weights": weights,
                     **{m: report["metrics"][m] for m in MEASURES},
                     "index_mib": index_bytes(out / "index") / 2**20})
        log.info("%s %s %s: %s", name, encoder, label, rows[-1])
    return rows


def agreement(folder: Path, n_queries: int = 1000) -> dict[str, float]:
    """Mean share of float32's top 10 kept by each quantisation of the SPLADE-tiny document vectors (scipy)."""
    import numpy as np
    import scipy.sparse as sp

    from lsr.encoders import load_encoder

    def load(name: str) -> sp.csr_matrix:
        z = np.load(folder / name)
        return sp.csr_matrix((z["values"].astype(np.float32), z["indices"], z["indptr"]),
                             shape=(len(z["indptr"]) - 1, int(z["dim"])))

    docs_t, queries = load("docs.npz").T.tocsr(), load("queries.npz")[:n_queries]

    def top10(d: sp.csr_matrix) -> np.ndarray:
        return np.argsort(-(queries @ d).toarray(), axis=1, kind="stable")[:, :10]

    exact = top10(docs_t)
    bound = load_encoder("splade-tiny").weight_bound()
    out = {}
    for label, top, largest in [("uint8, scale from the largest weight seen", 255, float(docs_t.data.max())),
                                ("uint8, scale from the bound", 255, bound),
                                ("uint16, scale from the bound", 65535, bound)]:
        q = docs_t.copy()
        q.data = (np.minimum(np.round(q.data * (top / largest)), top) / (top / largest)).astype(np.float32)
        out[label] = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(exact, top10(q), strict=True)]))
    return out


def render(rows: list[dict], m: dict, agree: dict[str, float] | None = None) -> str:
    lines = [f"{machine_line(m)} Test splits, exact top-1000, `python benchmarks/weights.py`; "
             "Δ against float32 of the same encoder and set. The default (`--weights auto`) is the bold row.", "",
             "| set | encoder | stored weights | scale | nDCG@10 | Δ | R@100 | Δ | index MiB |",
             "|---|---|---|---|---|---|---|---|---|"]
    base = {(r["dataset"], r["encoder"]): r for r in rows if r["storage"] == "float32"}
    for r in rows:
        b = base[(r["dataset"], r["encoder"])]
        label = f"**{r['storage']}**" if r["storage"] == AUTO_ROW else r["storage"]
        lines.append(f"| {r['dataset']} | {r['encoder']} | {label} | {r['weights']['scale']:.4g} | "
                     f"{r['nDCG@10']:.4f} | {r['nDCG@10'] - b['nDCG@10']:+.4f} | {r['R@100']:.4f} | "
                     f"{r['R@100'] - b['R@100']:+.4f} | {r['index_mib']:.1f} |")
    if agree:
        lines += ["", "Share of float32's exact top 10 kept, SPLADE-tiny on enwiki-100k (100,000 passages, first "
                  "1,000 title queries): " + "; ".join(f"{k} {v:.4f}" for k, v in agree.items()) + "."]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", default="scifact,nfcorpus")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    rows = [row for name in args.datasets.split(",") for encoder in ENCODERS for row in run(name, encoder)]
    enwiki = bench_dir() / "enwiki-100k"
    agree = agreement(enwiki) if (enwiki / "docs.npz").exists() else None
    m = machine()
    (HERE / "results" / "weights.json").write_text(json.dumps({"machine": m, "rows": rows, "top10_agreement": agree},
                                                              indent=1))
    replace_section(HERE / "README.md", "weights", render(rows, m, agree), heading="## Stored weight types")
    print(render(rows, m, agree))


if __name__ == "__main__":
    main()
