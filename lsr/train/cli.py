"""``lsr train-data`` and ``lsr train``: argument parsing for the training commands (imports no torch)."""

from __future__ import annotations

import argparse
from dataclasses import fields
from pathlib import Path

from lsr.train.config import TrainConfig

__all__ = ["add_train_commands"]


def add_train_commands(sub) -> None:  # noqa: ANN001 - argparse's subparsers action
    p = sub.add_parser("train-data", help="training examples for a BEIR split: mined negatives, teacher scores")
    p.add_argument("dataset", help="BEIR folder (or a bundled name) with qrels/<split>.tsv")
    p.add_argument("index", type=Path, help="an lsr index of the dataset's corpus, searched to mine negatives")
    p.add_argument("--out", type=Path, required=True, help="training JSONL to write")
    p.add_argument("--split", default="train", help="qrels split [train]")
    p.add_argument("--depth", type=int, default=50, help="retrieval depth to mine negatives from [50]")
    p.add_argument("--negatives", type=int, default=30, help="negatives kept per query [30]")
    p.add_argument("--teachers", default=None,
                   help="ensemble teacher scores, e.g. 'dense=0.5,sparse=0.5' (dense all-MiniLM-L6-v2, sparse "
                        "splade-tiny); cached in OUT.teachers.jsonl")
    p.add_argument("--teacher-scale", type=float, default=10.0, help="S: the ensemble score scale [10]")
    p.set_defaults(func=cmd_train_data)

    p = sub.add_parser("train", help="fine-tune a SPLADE / inference-free document encoder (resumable)")
    p.add_argument("train_file", help="training JSONL (docs/training.md)")
    p.add_argument("--corpus", required=True, help="corpus (BEIR folder or JSONL) holding the document ids")
    p.add_argument("--out", type=Path, required=True, help="run folder; the model lands in OUT/model")
    p.add_argument("--overwrite", action="store_true", help="start over, removing OUT")
    defaults = TrainConfig("", "")
    for f in fields(TrainConfig):
        if f.name in ("train_file", "corpus"):
            continue
        default = getattr(defaults, f.name)
        kind = {"int": int, "float": float}.get(str(f.type).split(" ")[0], str)  # "int | None" -> int
        p.add_argument("--" + f.name.replace("_", "-"), type=kind, default=default, help=f"[{default}]")
    p.set_defaults(func=cmd_train)


def cmd_train_data(args: argparse.Namespace) -> int:
    from lsr.errors import InvalidInputError
    from lsr.io.beir import resolve_dataset
    from lsr.train.data import mine_examples, read_texts, write_examples

    examples = mine_examples(args.dataset, args.index, args.split, args.depth, args.negatives)
    if args.teachers:
        from lsr.train.teachers import ensemble_teacher_scores

        try:
            weights = {name: float(w) for name, w in (part.split("=") for part in args.teachers.split(","))}
        except ValueError:
            raise InvalidInputError(f"--teachers {args.teachers!r}: expected NAME=WEIGHT[,NAME=WEIGHT]") from None
        texts = read_texts(resolve_dataset(args.dataset), {d for e in examples for d in e.candidates()})
        cache = args.out.with_name(args.out.name + ".teachers.jsonl")
        ensemble_teacher_scores(examples, texts, cache, weights, args.teacher_scale)
    write_examples(args.out, examples)
    print(f"wrote {len(examples)} examples to {args.out}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from lsr.train.trainer import train

    options = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if f.name not in ("train_file", "corpus")}
    config = TrainConfig(str(args.train_file), str(args.corpus), **options)
    final = train(config, args.out, overwrite=args.overwrite, show_progress=not args.quiet)
    print(f"model saved to {final}")
    return 0
