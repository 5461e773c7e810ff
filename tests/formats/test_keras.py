"""Keras models: a `.keras` archive is its own format (not a torch zip), and a Lambda layer,
which Keras stores as marshalled Python bytecode, is code: refused like a pickle that imports
something, whether the model is declared, undeclared, or allowed as a pickle."""

from __future__ import annotations

import base64
import json
import zipfile
from pathlib import Path
from typing import Any

from tests.helpers import HEAD, artifact_yaml, check, errors, manifest, rules_of

POLICY = "policy:\n  allowed_formats: [safetensors, keras, hdf5]\n"


def _layers(lam: bool) -> list[dict[str, Any]]:
    layers: list[dict[str, Any]] = [{"class_name": "Dense", "config": {"name": "d", "units": 4}}]
    if lam:
        code = base64.b64encode(b"\xe3" + b"\0" * 40).decode()  # what marshal.dumps starts with
        fn = {"class_name": "__lambda__", "config": {"code": code, "defaults": None}}
        layers.append({"class_name": "Lambda", "config": {"name": "evil", "function": fn}})
    return layers


def keras_zip(path: Path, lam: bool, config: bytes | None = None) -> Path:
    doc = {"class_name": "Sequential", "config": {"name": "s", "layers": _layers(lam)}}
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("metadata.json", json.dumps({"keras_version": "3.6.0"}))
        z.writestr("config.json", config if config is not None else json.dumps(doc))
        z.writestr("model.weights.h5", b"\x89HDF\r\n\x1a\n" + bytes(64))
    return path


def keras_h5(path: Path, lam: bool) -> Path:
    """Bytes as Keras 2 leaves them: HDF5 magic, then the model_config attribute's JSON."""
    doc = {"class_name": "Sequential", "config": {"name": "s", "layers": _layers(False)}}
    if lam:
        doc["config"]["layers"].append(
            {"class_name": "Lambda", "config": {"function": ["4wEA", None, None]}}
        )
    path.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(300) + json.dumps(doc).encode() + bytes(300))
    return path


def test_a_keras_archive_is_keras_not_a_pickle(tmp_path: Path) -> None:
    keras_zip(tmp_path / "model.keras", lam=False)
    manifest(tmp_path, HEAD + artifact_yaml(tmp_path, "model.keras") + POLICY)
    report = check(tmp_path)
    assert errors(report) == [] and "PG306" in rules_of(report, "note")
    (result,) = report.artifacts
    assert result.format == "keras"


def test_a_lambda_layer_is_code(tmp_path: Path) -> None:
    keras_zip(tmp_path / "model.keras", lam=True)
    manifest(tmp_path, HEAD + artifact_yaml(tmp_path, "model.keras") + POLICY)
    (pg302,) = [f for f in check(tmp_path).findings if f.rule == "PG302"]
    assert "Lambda layer 'evil'" in pg302.message and "keras.layers.Lambda" in pg302.message
    allowed = POLICY.replace("hdf5]", "hdf5, pickle]")
    manifest(tmp_path, HEAD + artifact_yaml(tmp_path, "model.keras") + allowed)
    assert "PG307" in errors(check(tmp_path))  # allowing pickles does not allow a Lambda


def test_a_legacy_h5_lambda_is_code(tmp_path: Path) -> None:
    keras_h5(tmp_path / "model.h5", lam=True)
    manifest(tmp_path, HEAD + artifact_yaml(tmp_path, "model.h5") + POLICY)
    (pg302,) = [f for f in check(tmp_path).findings if f.rule == "PG302"]
    assert "Keras 2, HDF5" in pg302.message
    keras_h5(tmp_path / "model.h5", lam=False)
    manifest(tmp_path, HEAD + artifact_yaml(tmp_path, "model.h5") + POLICY)
    assert errors(check(tmp_path)) == []


def test_an_undeclared_lambda_is_found(tmp_path: Path) -> None:
    keras_zip(tmp_path / "extra.keras", lam=True)
    manifest(tmp_path, HEAD + "artifacts: []\n" + POLICY + "ignore: [extra.keras]\n")
    assert "PG311" in errors(check(tmp_path))


def test_an_unreadable_config_fails_closed(tmp_path: Path) -> None:
    keras_zip(tmp_path / "model.keras", lam=False, config=b"{" * 5000)
    manifest(tmp_path, HEAD + artifact_yaml(tmp_path, "model.keras") + POLICY)
    assert "PG302" in errors(check(tmp_path))  # it may hold a Lambda: refused
