"""The one place below the command line that reads the environment.

cli.py builds one Settings per run (its options win over the variables); everything else takes
settings as arguments. The variables: PROVENANCE_GATE_CACHE_DIR / XDG_CACHE_HOME (the gate's
cache: stat cache, Hub metadata, probe calibration), HF_ENDPOINT, HF_HUB_OFFLINE, HF_HUB_CACHE /
HF_HOME (the Hugging Face cache, read now: huggingface_hub reads it once, at import),
PROVENANCE_GATE_HUB_TIMEOUT and PROVENANCE_GATE_VERBOSE. HF_TOKEN is left to huggingface_hub.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping

DEFAULT_HUB_TIMEOUT = 10.0  # seconds per Hub request
_TRUE = {"1", "ON", "YES", "TRUE"}


@dataclasses.dataclass(frozen=True)
class Settings:
    cache_dir: str  # the gate's own cache folder
    hub_endpoint: str = "https://huggingface.co"
    hub_offline: bool = False
    hub_timeout: float = DEFAULT_HUB_TIMEOUT
    hf_cache: str = ""  # the Hugging Face hub cache ("": ~/.cache/huggingface/hub)
    verbose: bool = False

    @classmethod
    def from_environment(
        cls,
        environ: Mapping[str, str] | None = None,
        *,
        cache_dir: str | None = None,
        offline: bool = False,
        verbose: bool = False,
    ) -> Settings:
        """Settings from the variables, with the command line's values first."""
        env = os.environ if environ is None else environ
        return cls(
            cache_dir=cache_dir or default_cache_dir(env),
            hub_endpoint=(env.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/"),
            hub_offline=offline or env.get("HF_HUB_OFFLINE", "").strip().upper() in _TRUE,
            hub_timeout=_timeout(env.get("PROVENANCE_GATE_HUB_TIMEOUT")),
            hf_cache=_hf_cache(env),
            verbose=verbose or bool(env.get("PROVENANCE_GATE_VERBOSE")),
        )


def default_cache_dir(environ: Mapping[str, str] | None = None) -> str:
    """$PROVENANCE_GATE_CACHE_DIR, else $XDG_CACHE_HOME/provenance-gate, else ~/.cache/…"""
    env = os.environ if environ is None else environ
    explicit = env.get("PROVENANCE_GATE_CACHE_DIR")
    if explicit:
        return explicit
    base = env.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "provenance-gate")


def _hf_cache(env: Mapping[str, str]) -> str:
    """HF_HUB_CACHE, else HF_HOME/hub, else ~/.cache/huggingface/hub."""
    explicit = env.get("HF_HUB_CACHE")
    if explicit:
        return explicit
    home = env.get("HF_HOME") or os.path.join(
        env.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"),
        "huggingface",
    )
    return os.path.join(home, "hub")


def _timeout(value: str | None) -> float:
    try:
        return max(0.1, float(value)) if value else DEFAULT_HUB_TIMEOUT
    except ValueError:
        return DEFAULT_HUB_TIMEOUT
