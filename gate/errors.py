"""The one exception family of the gate, and the process exit codes."""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    """Exit codes; documented in the README, stable across releases."""

    PASS = 0
    FAILED = 1  # verification found problems at or above --fail-on
    USAGE = 2  # bad command line, unreadable or invalid manifest
    NOTHING = 3  # nothing to check: no manifest and no weight files
    CRASH = 4  # a bug in the gate: please report it
    INTERRUPTED = 130


class GateError(Exception):
    """A run-wide failure that explains itself: what went wrong, where, and what to do."""

    exit_code: ExitCode = ExitCode.USAGE

    def __init__(self, message: str, *, hint: str | None = None, where: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.where = where

    def __str__(self) -> str:
        prefix = f"{self.where}: " if self.where else ""
        return f"{prefix}{self.message}"


class ManifestError(GateError):
    """The manifest cannot be read at all (missing, not a file, too large, undecodable)."""


class NothingToCheck(GateError):
    """The directory holds neither a manifest nor weight files."""

    exit_code = ExitCode.NOTHING


class FormatError(GateError):
    """A checkpoint, index or pointer file is malformed; callers turn it into a finding."""
