"""provenance-gate: verify a model repository's provenance declarations against its weights."""

__version__ = "0.2.0"

# The distribution's name on PyPI. The command stays `provenance-gate`, but the PyPI name
# `provenance-gate` belongs to an unrelated project: an install hint naming it would install
# someone else's code (dependency confusion). Every hint is built from this constant.
DISTRIBUTION = "model-provenance-gate"
PROJECT_URL = f"https://pypi.org/project/{DISTRIBUTION}/"
REPOSITORY_URL = "https://github.com/provenance-gate/provenance-gate"  # the Action's `uses:`
RULES_URL = f"{REPOSITORY_URL}#what-is-checked"  # the README's rule table


def pip_install(extras: str) -> str:
    """The command that adds extras (e.g. "lineage") to an installed gate."""
    return f"pip install '{DISTRIBUTION}[{extras}]'"
