"""provenance-gate: verify a model repository's provenance declarations against its weights."""

__version__ = "0.1.0"
