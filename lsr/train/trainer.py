"""``lsr train``: fine-tune a SPLADE model (both sides, or the document side of an inference-free encoder).

The run lives in one folder::

    OUT/train_config.json   the settings (a resume must use the same ones)
    OUT/checkpoint.pt       model + optimiser + scheduler + step, replaced atomically every N steps
    OUT/train_log.jsonl     one line per step: every loss term, the lambdas, sparsity (non-zeros, FLOPS)
    OUT/model/              the result: a Hugging Face folder + idf.json (the query weights it was trained
                            with), loadable by every lsr encoder and by transformers

Determinism: each step seeds torch (dropout) and draws its batch from ``(seed, step)`` alone, so a run
killed at any point and resumed from its last checkpoint ends with the same weights as an uninterrupted one.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import torch
from tqdm.auto import tqdm

from lsr.errors import InvalidInputError
from lsr.index.format import write_bytes_atomic
from lsr.train.config import TrainConfig
from lsr.train.data import TrainingExample, read_examples, read_texts
from lsr.train.losses import (
    L1,
    RANKING_LOSSES,
    Flops,
    Objective,
    QuadraticWarmup,
    flops_per_pair,
    idf_aware_flops,
)
from lsr.train.pooling import splade_representation

__all__ = ["TrainConfig", "train"]

log = logging.getLogger(__name__)

def _query_weights(config: TrainConfig, tokenizer, dim: int, out: Path) -> np.ndarray:  # noqa: ANN001
    """The fixed query-side weights of an inference-free run, written to OUT/idf.json and read back (so
    training uses exactly the table the saved model ships)."""
    from lsr.encoders.idf import compute_idf, load_idf, save_idf_json
    from lsr.io.beir import iter_corpus

    target = out / "idf.json"
    if not target.is_file():
        if config.flops == "plain":  # binary presence: every ordinary token weighs 1
            weights = np.ones(dim, np.float32)
        elif config.idf is not None:
            weights, _ = load_idf(config.idf, tokenizer, dim)
        else:
            weights, _ = compute_idf((d.full_text for d in iter_corpus(Path(config.corpus))), tokenizer, dim)
        weights[[i for i in tokenizer.all_special_ids if i < dim]] = 0.0
        save_idf_json(weights, tokenizer, target)
    return load_idf(target, tokenizer, dim)[0]


class _Run:
    """One training run's state: model, data, objective, optimiser."""

    def __init__(self, config: TrainConfig, out: Path):
        from lsr.encoders.loading import load_masked_lm

        self.config, self.out = config, out
        torch.manual_seed(config.seed)  # the same initial state for any head the loader might initialise
        self.tokenizer, self.model = load_masked_lm(config.model)
        self.dim = int(self.model.get_output_embeddings().out_features)
        self.special = torch.tensor(sorted(set(self.tokenizer.all_special_ids)), dtype=torch.long)
        self.examples = read_examples(config.train_file)
        if config.loss != "infonce":
            self.examples = _usable_for_distillation(self.examples, config.negatives)
        self.texts = read_texts(config.corpus, {d for e in self.examples for d in e.candidates()})
        self.query_idf = None
        if config.encoder == "inference-free":
            self.query_idf = torch.from_numpy(_query_weights(config, self.tokenizer, self.dim, out))
        self.objective = self._objective()
        per_epoch = max(1, len(self.examples) // config.batch_size)
        self.per_epoch = per_epoch
        self.total_steps = config.steps or max(1, math.ceil(config.epochs * per_epoch))
        self.temperature = config.temperature or 1.0  # 0: calibrated before the first step (train())
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=config.lr)
        warmup = int(config.warmup_ratio * self.total_steps)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: min(1.0, (s + 1) / max(1, warmup)) * max(0.0, 1 - s / self.total_steps))

    @property
    def idf_in_documents(self) -> bool:
        """The IDF-aware FLOPS in its "weighted" form: the IDF moves from the queries into the documents."""
        c = self.config
        return self.query_idf is not None and c.flops == "idf-aware" and c.idf_form == "weighted"

    def _objective(self) -> Objective:
        c = self.config
        if c.encoder == "inference-free" and c.flops == "idf-aware":
            doc_reg = idf_aware_flops(self.query_idf, c.idf_form, c.l0_threshold)
        else:
            doc_reg = Flops(threshold=c.l0_threshold)
        query_reg = L1() if c.encoder == "splade" else None
        return Objective(RANKING_LOSSES[c.loss](), doc_reg, QuadraticWarmup(c.doc_lambda, c.lambda_warmup),
                         query_reg, QuadraticWarmup(c.query_lambda, c.lambda_warmup) if query_reg else None)

    def batch(self, step: int) -> tuple[list[TrainingExample], list[list[str]]]:
        """The examples and candidate documents (positive first) of ``step``: a per-epoch permutation of the
        examples and per-step sampling, both from the seed and the step number alone."""
        epoch, offset = divmod(step, self.per_epoch)
        order = np.random.default_rng([self.config.seed, epoch]).permutation(len(self.examples))
        chosen = [self.examples[i] for i in order[offset * self.config.batch_size:][:self.config.batch_size]]
        rng = np.random.default_rng([self.config.seed, 1_000_003, step])
        candidates = []
        for example in chosen:
            docs = [example.positives[rng.integers(len(example.positives))]]
            n = min(self.config.negatives, len(example.negatives))
            if n:
                docs += [example.negatives[i] for i in rng.choice(len(example.negatives), n, replace=False)]
            candidates.append(docs)
        return chosen, candidates

    def _encode(self, texts: list[str], max_length: int) -> torch.Tensor:
        batch = self.tokenizer(texts, truncation=True, max_length=max_length, padding=True, return_tensors="pt")
        return splade_representation(self.model, dict(batch), self.special)

    def _queries(self, texts: list[str]) -> torch.Tensor:
        """Inference-free: presence x weight (fixed); SPLADE: the model's query representation."""
        if self.query_idf is None:
            return self._encode(texts, self.config.query_max_length)
        ids = self.tokenizer(texts, add_special_tokens=False, truncation=True,
                             max_length=self.config.query_max_length)["input_ids"]
        presence = torch.zeros((len(texts), self.dim))
        for row, tokens in enumerate(ids):
            presence[row, tokens] = 1.0
        if self.idf_in_documents:
            return presence * (self.query_idf > 0)  # binary; the IDF moves into the document representation
        return presence * self.query_idf

    def _forward(self, step: int) -> tuple[dict[str, Any], torch.Tensor, torch.Tensor, torch.Tensor]:
        """(ranking-loss inputs, document representations for the regulariser, queries, documents) of a step."""
        examples, candidates = self.batch(step)
        flat = [d for docs in candidates for d in docs]
        docs = self._encode([self.texts[d] for d in flat], self.config.max_length)
        doc_reps = docs
        if self.idf_in_documents:
            doc_reps = docs * self.query_idf  # u = idf * w: what a binary query matches
        queries = self._queries([e.query for e in examples])
        scores = queries @ doc_reps.t()
        width = len(candidates[0]) if len({len(c) for c in candidates}) == 1 else None
        inputs: dict[str, Any] = {"scores": scores, "positives": _positive_columns(candidates)}
        if self.config.loss != "infonce":
            if width is None:
                raise InvalidInputError("distillation needs the same number of negatives for every query; "
                                        "lower --negatives to the shortest negative list.")
            rows = torch.arange(len(examples)).unsqueeze(1)
            inputs["own"] = scores[rows, torch.arange(len(flat)).view(len(examples), width)] / self.temperature
            inputs["teacher"] = torch.tensor([[e.teacher_scores[d] for d in docs]
                                              for e, docs in zip(examples, candidates, strict=True)])
        return inputs, doc_reps, queries, docs

    def calibrate_temperature(self, batches: int = 8) -> float:
        """The student temperature that best fits the untrained model to the teacher on the first training
        batches: the KL's minimiser over a log grid. A student whose scores live on another scale than the
        teacher's (IDF-weighted matches reach tens, teacher scores span [0, S]) would otherwise spend its first
        steps rescaling every weight, which the FLOPS term then rewards as sparsity."""
        self.temperature = 1.0
        self.model.eval()
        with torch.no_grad():
            pairs = [self._forward(step)[0] for step in range(min(batches, self.total_steps))]
        self.model.train()
        own = torch.cat([p["own"] for p in pairs])
        teacher = torch.log_softmax(torch.cat([p["teacher"] for p in pairs]), dim=1)
        exponents = np.arange(-16, 33) / 4  # 2^-4 .. 2^8 in quarter powers; exponent 0 is tau = 1
        grid = 2.0**exponents
        kl = [float(torch.nn.functional.kl_div(torch.log_softmax(own / t, dim=1), teacher, log_target=True,
                                               reduction="batchmean")) for t in grid]
        self.temperature = float(grid[int(np.argmin(kl))])
        log.info("student temperature %g (KL %.3f at 1, %.3f at the best)", self.temperature,
                 kl[int(np.flatnonzero(exponents == 0)[0])], min(kl))
        return self.temperature

    def step(self, step: int) -> dict[str, float]:
        torch.manual_seed(self.config.seed * 1_000_003 + step)  # dropout depends on the step alone
        inputs, doc_reps, queries, docs = self._forward(step)
        terms = self.objective(step, doc_reps, queries if self.query_idf is None else None, **inputs)
        self.optimizer.zero_grad(set_to_none=True)
        terms["loss"].backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.optimizer.step()
        self.scheduler.step()
        with torch.no_grad():
            record = {name: float(value) for name, value in terms.items()}
            record.update(step=step + 1, lr=self.scheduler.get_last_lr()[0], temperature=self.temperature,
                          query_nnz=float((queries != 0).sum(1).float().mean()),
                          doc_nnz=float((docs != 0).sum(1).float().mean()),
                          flops=float(flops_per_pair(queries, docs)))
        return record

    def state(self, step: int) -> dict[str, Any]:
        return {"step": step, "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "temperature": self.temperature}

    def restore(self, state: dict[str, Any]) -> int:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.temperature = float(state.get("temperature", 1.0))
        return int(state["step"])


def _positive_columns(candidates: list[list[str]]) -> torch.Tensor:
    starts = np.cumsum([0] + [len(c) for c in candidates[:-1]])
    return torch.as_tensor(starts, dtype=torch.long)


def _usable_for_distillation(examples: list[TrainingExample], negatives: int) -> list[TrainingExample]:
    """Distillation compares each query's own candidates: every one needs a teacher score, and every query the
    same number of negatives. Examples with too few negatives are left out (logged); none left is an error."""
    for e in examples:
        if e.teacher_scores is None or any(d not in e.teacher_scores for d in e.candidates()):
            raise InvalidInputError(f"example {e.qid!r} lacks teacher scores for its candidates; distillation "
                                    "losses need them (lsr train-data --teachers), or use --loss infonce.")
    usable = [e for e in examples if len(e.negatives) >= negatives]
    if not usable:
        raise InvalidInputError(f"no example has --negatives {negatives} negatives; lower --negatives.")
    if len(usable) < len(examples):
        log.warning("%d of %d examples have fewer than %d negatives and are left out", len(examples) - len(usable),
                    len(examples), negatives)
    return usable


def _save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as fh:
        torch.save(state, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _read_log(path: Path, upto: int) -> list[bytes]:
    """The log lines of steps <= ``upto`` (a resumed run rewrites what came after its checkpoint)."""
    if not path.is_file():
        return []
    kept = []
    for line in path.read_bytes().splitlines():
        try:
            if orjson.loads(line)["step"] <= upto:
                kept.append(line + b"\n")
        except (orjson.JSONDecodeError, KeyError):
            break  # a torn last line
    return kept


def _check_same_run(out: Path, config: TrainConfig) -> None:
    stored = out / "train_config.json"
    if stored.is_file():
        if json.loads(stored.read_text()) != asdict(config):
            raise InvalidInputError(f"{out} holds a run with other settings; pass another --out, or --overwrite "
                                    "to start over.")
    else:
        out.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(stored, json.dumps(asdict(config), indent=2).encode())


def train(config: TrainConfig, out: str | os.PathLike[str], overwrite: bool = False,
          show_progress: bool = True) -> Path:
    """Run (or resume) a training run into ``out``; returns the saved model folder ``out/model``."""
    config.check()
    out = Path(out)
    if overwrite and out.exists():
        shutil.rmtree(out)
    _check_same_run(out, config)
    final = out / "model"
    if (final / "config.json").is_file():
        log.info("%s already holds the trained model", final)
        return final
    if config.threads:
        torch.set_num_threads(config.threads)
    run = _Run(config, out)
    checkpoint = out / "checkpoint.pt"
    start = 0
    if checkpoint.is_file():
        start = run.restore(torch.load(checkpoint, weights_only=False))
        log.info("resuming %s at step %d of %d", out, start, run.total_steps)
    elif config.temperature == 0 and config.loss != "infonce":
        run.calibrate_temperature()
    log_path = out / "train_log.jsonl"
    write_bytes_atomic(log_path, b"".join(_read_log(log_path, start)))
    run.model.train()
    started = time.perf_counter()
    with log_path.open("ab") as log_file, tqdm(total=run.total_steps, initial=start, desc="training",
                                               unit="step", disable=not show_progress) as bar:
        for step in range(start, run.total_steps):
            record = run.step(step)
            log_file.write(orjson.dumps(record) + b"\n")
            log_file.flush()
            bar.set_postfix(loss=f"{record['loss']:.3f}", doc_nnz=f"{record['doc_nnz']:.0f}")
            bar.update()
            if (step + 1) % config.checkpoint_every == 0 or step + 1 == run.total_steps:
                os.fsync(log_file.fileno())
                _save_checkpoint(checkpoint, run.state(step + 1))
    seconds = time.perf_counter() - started
    log.info("trained %d steps in %.1f s", run.total_steps - start, seconds)
    return _save_model(run, out, final, {"steps": run.total_steps, "resumed_at": start, "seconds": seconds})


def _save_model(run: _Run, out: Path, final: Path, summary: dict[str, Any]) -> Path:
    """The Hugging Face folder (+ idf.json), written beside and renamed into place: all or nothing."""
    tmp = out / ".model.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    run.model.eval()
    run.model.save_pretrained(tmp)
    run.tokenizer.save_pretrained(tmp)
    if (out / "idf.json").is_file():
        shutil.copyfile(out / "idf.json", tmp / "idf.json")
    # seconds: wall time of the process that finished the run (since its resume, if it resumed)
    write_bytes_atomic(tmp / "lsr-train.json", json.dumps({"config": asdict(run.config), **summary},
                                                          indent=2).encode())
    os.replace(tmp, final)
    return final
