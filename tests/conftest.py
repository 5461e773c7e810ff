from __future__ import annotations

import socket
import sys
from pathlib import Path

import pytest

ZOO_SIZE = (4, 2)  # llama and gpt2 bases: the zoo bench/lineage_accuracy.py also uses


@pytest.fixture(scope="session")
def zoo(pytestconfig: pytest.Config) -> Path:
    """The trained model zoo (tests/zoo/build.py), built on first use and cached across runs.
    Building takes minutes: its progress goes to the terminal, past pytest's capture."""
    from tests.zoo import build

    capture = pytestconfig.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled() if capture else _nothing():
        return build.ensure(None, *ZOO_SIZE, progress=_progress)


@pytest.fixture(scope="session")
def arch_zoo(pytestconfig: pytest.Config) -> Path:
    """The architecture zoo (tests/zoo/archs.py: BERT, RoBERTa, T5, ViT, Whisper, Qwen2, Gemma,
    Phi, Mixtral), built on first use and cached like the zoo."""
    from tests.zoo import archs

    capture = pytestconfig.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled() if capture else _nothing():
        return archs.ensure(progress=_progress)


def _progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


@pytest.fixture(autouse=True)
def _no_network(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Nothing leaves the machine: in-process connections go to loopback only (the Hub
    stand-ins of tests/hubserver.py), and subprocesses get a Hub endpoint that refuses (port 9)
    and a private Hugging Face cache."""
    connect = socket.socket.connect

    def loopback_only(self: socket.socket, address: object) -> None:
        if not (isinstance(address, tuple) and address[0] in ("127.0.0.1", "::1")):
            raise AssertionError(f"network access attempted in a test: {address!r}")
        connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", loopback_only)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("HF_HOME", str(tmp_path_factory.mktemp("hf-home")))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_TOKEN", raising=False)


@pytest.fixture(autouse=True)
def _private_cache(
    monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """CLI runs in tests use a fresh stat cache, never the user's."""
    path = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv("PROVENANCE_GATE_CACHE_DIR", str(path))
    return path
