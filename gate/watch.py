"""Which files can change a verdict: what the full pre-commit hook and the example workflows'
`paths:` filters watch. One list, so the hook, the workflows and the gate cannot drift apart
(tests/test_watch.py compares them; `python -m gate.watch` prints both forms)."""

from __future__ import annotations

import re

from gate.checks.declarations import LICENSE_FILES
from gate.formats.registry import INDEX_SUFFIX, WEIGHT_SUFFIXES
from gate.lockfile import LOCK_NAME
from gate.manifest import MANIFEST_NAME

NAMES = (MANIFEST_NAME, LOCK_NAME, "README.md", ".gitattributes", *LICENSE_FILES)
SUFFIXES = (INDEX_SUFFIX, *sorted(WEIGHT_SUFFIXES))


# weight files recognised by name alone (TensorFlow SavedModel checkpoints), as globs
GLOBS = ("variables.index", "variables.data-*")


def hook_files() -> str:
    """The `files:` regex of a pre-commit hook: these names and suffixes at any depth."""
    names = "|".join(re.escape(n) for n in NAMES)
    suffixes = "|".join(re.escape(s) for s in SUFFIXES)
    globs = "|".join(re.escape(g).replace(r"\*", "[^/]*") for g in GLOBS)
    return f"(^|/)({names}|{globs}|[^/]*({suffixes}))$"


def workflow_paths() -> list[str]:
    """A workflow's `on.<event>.paths:` globs: the same files at any depth."""
    return [f"**/{n}" for n in (*NAMES, *GLOBS)] + [f"**/*{s}" for s in SUFFIXES]


if __name__ == "__main__":
    print(f"files: {hook_files()}")
    print("paths:")
    for glob in workflow_paths():
        print(f'  - "{glob}"')
