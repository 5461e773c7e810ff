"""Repository-relative paths: nothing outside the repository is read through a declaration."""

from __future__ import annotations

import contextlib
import errno
import io
import os
import re
import stat
import tempfile
from collections.abc import Iterator

_DRIVE = re.compile(r"^[A-Za-z]:(?:[/\\]|$)")  # C:/x, C:\x, C: (a file `a: b.pt` is relative)
SKIP_DIRS = frozenset({".git", ".hg", ".svn"})


def resolve_inside(root: str, rel: str) -> tuple[str, str | None]:
    """(real path, problem): problem names why rel may not be used, else None.

    The real path is what callers open, so a symlink swapped in after this check cannot point
    the read outside (only an intermediate directory swap remains, which needs write access to
    the repository during the run).
    """
    if not rel or rel.startswith(("/", "\\")) or _DRIVE.match(rel):
        return "", "absolute paths are not allowed; use a path relative to the repository root"
    if "\\" in rel:
        return "", "use `/` as the path separator"
    if "\0" in rel:
        return "", "the path contains a NUL byte"
    if ".." in rel.split("/"):
        return "", "`..` leads outside the repository"
    real = os.path.realpath(os.path.join(root, rel))
    if not is_within(real, root):
        return real, f"a symlink resolves outside the repository (to {real})"
    return real, None


class NotRegularFile(OSError):
    """A path names a directory, FIFO, device or socket: reading it could hang or mislead."""


def open_regular(path: str) -> io.FileIO:
    """Open a regular file for reading; never block on a FIFO or device an attacker swapped in."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = "a directory" if stat.S_ISDIR(mode) else "not a regular file"
            raise NotRegularFile(errno.EINVAL, kind, path)
        os.set_blocking(fd, True)
        return io.FileIO(fd, "r", closefd=True)
    except BaseException:
        os.close(fd)
        raise


def read_capped(f: io.FileIO, cap: int) -> bytes:
    """Up to cap + 1 bytes (so callers can tell "over the cap"), allocating no more than the file
    holds: file objects allocate the requested size up front."""
    size = os.fstat(f.fileno()).st_size
    return f.read(min(size, cap) + 1) or b""


def is_within(path: str, root: str) -> bool:
    """Whether a real path lies inside (or is) the real root."""
    return os.path.commonpath([path, root]) == root


class GlobSet:
    """Repository-path patterns, compiled once: `*` and `?` stay within a folder, a `**` path
    segment matches any number of folders (a trailing one at least one).

    Matching goes segment by segment: a `**` segment with the classic backtrack-to-the-last-star
    loop (quadratic at worst), every other segment with fnmatch's regex, whose stars do not
    backtrack into each other. No pattern can make matching exponential (a hostile manifest
    once took minutes with one regex per pattern and path).
    """

    def __init__(self, patterns: tuple[str, ...] | list[str]) -> None:
        self.patterns = tuple(patterns)
        self._compiled = [_glob_tokens(p) for p in self.patterns]

    def __bool__(self) -> bool:
        return bool(self.patterns)

    def match(self, rel: str) -> bool:
        """Whether any pattern matches the path."""
        segments = rel.split("/")
        return any(_glob_match(tokens, segments) for tokens in self._compiled)


_ANY_SEGMENT = re.compile(r"(?s:.*)")


def _glob_tokens(pattern: str) -> list[re.Pattern[str] | None]:
    """A pattern as segment matchers; None stands for `**` (any number of segments)."""
    import fnmatch

    tokens: list[re.Pattern[str] | None] = []
    for seg in pattern.split("/"):
        if seg == "**":
            if not tokens or tokens[-1] is not None:  # `**/**` is `**`
                tokens.append(None)
        else:  # `[` is literal here, as it always was: fnmatch reads `[[]` as one `[`
            tokens.append(re.compile(fnmatch.translate(seg.replace("[", "[[]"))))
    if tokens and tokens[-1] is None:
        tokens.append(_ANY_SEGMENT)  # `dir/**` is what is inside dir, not dir itself
    return tokens


def _glob_match(tokens: list[re.Pattern[str] | None], segments: list[str]) -> bool:
    t = s = 0
    star, resume = -1, 0
    while s < len(segments):
        token = tokens[t] if t < len(tokens) else _END
        if token is None:
            star, resume = t, s
            t += 1
        elif token is not _END and token.match(segments[s]):
            t += 1
            s += 1
        elif star >= 0:
            resume += 1
            t, s = star + 1, resume
        else:
            return False
    return all(token is None for token in tokens[t:])


_END = re.compile("")  # sentinel: past the last token


def walk_files(root: str, skip: tuple[str, ...] = ()) -> Iterator[str]:
    """Repository-relative paths of files, sorted, not following directory symlinks."""
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        rel_dir = os.path.relpath(dirpath, root)
        rel_dir = "" if rel_dir == "." else rel_dir.replace(os.sep, "/") + "/"
        dirnames[:] = sorted(
            d for d in dirnames if d not in SKIP_DIRS and (rel_dir + d) not in skip
        )
        for name in sorted(filenames):
            yield rel_dir + name


def atomic_write(path: str, text: str) -> None:
    """Replace path with text so readers see the old or the new file, never half of one."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".provenance-gate-", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.chmod(tmp, os.stat(path).st_mode & 0o777)
        except FileNotFoundError:
            os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
