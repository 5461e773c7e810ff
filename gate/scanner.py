"""Scans many files at once: stat cache first, then the misses in parallel, largest first."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING, Protocol

from gate import hashing
from gate.cache import StatCache, stat_key

if TYPE_CHECKING:
    from gate.formats.exposure import PickleScan


class ProgressSink(Protocol):
    """Receives hashing progress; advance() is called from worker threads."""

    def start(self, total_bytes: int, files: int) -> None: ...

    def advance(self, n: int) -> None: ...

    def finish(self) -> None: ...


def default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


class Scanner:
    """Turns real paths into FileScans (or the OSError that prevented reading them)."""

    def __init__(
        self,
        cache: StatCache | None = None,
        workers: int | None = None,
        progress: ProgressSink | None = None,
    ) -> None:
        self.cache = cache
        self.workers = workers or default_workers()
        self.progress = progress
        self.files_hashed = 0
        self.bytes_hashed = 0
        self.files_cached = 0
        self._loads: dict[tuple[str, bool], PickleScan] = {}

    def scan_many(
        self, real_paths: Iterable[str], tensors: bool = False
    ) -> dict[str, hashing.FileScan | OSError]:
        """One result per distinct path; unchanged files come from the cache without a read.

        tensors: compute the per-tensor digests too; otherwise only the SHA-256, and a file
        with a tensor table comes back `lazy`. Asking for the digests later costs a second
        read of the file, so callers that know they will need them ask at once."""
        out: dict[str, hashing.FileScan | OSError] = {}
        todo: list[tuple[str, os.stat_result]] = []
        for path in dict.fromkeys(real_paths):
            try:
                st = os.stat(path)
            except OSError as e:
                out[path] = e
                continue
            cached = self.cache.get(path, stat_key(st), tensors) if self.cache is not None else None
            if cached is not None:
                out[path] = cached
                self.files_cached += 1
            else:
                todo.append((path, st))
        if not todo:
            return out
        todo.sort(key=lambda item: -item[1].st_size)
        total = sum(st.st_size for _, st in todo)
        self.bytes_hashed += total
        if self.progress is not None:
            self.progress.start(total, len(todo))
        advance = self.progress.advance if self.progress is not None else None
        # A file's tensor digests get a helper thread only when a core would otherwise idle:
        # when fewer files remain to be started than there are workers (the tail of the run).
        not_started = [len(todo)]
        lock = threading.Lock()

        def one(item: tuple[str, os.stat_result]) -> hashing.FileScan | OSError:
            path, st = item
            with lock:
                threaded = not_started[0] < self.workers
                not_started[0] -= 1
            try:
                scan = hashing.scan(path, progress=advance, threaded=threaded, tensors=tensors)
            except OSError as e:
                return e
            if self.cache is not None and not scan.changed:
                try:
                    if stat_key(os.stat(path)) == stat_key(st):
                        self.cache.put(path, stat_key(st), scan)
                except OSError:
                    pass
            return scan

        try:
            if len(todo) == 1 or self.workers == 1:
                results = [one(item) for item in todo]
            else:
                from concurrent.futures import ThreadPoolExecutor  # not needed on warm runs

                with ThreadPoolExecutor(min(self.workers, len(todo))) as pool:
                    results = list(pool.map(one, todo))
        finally:
            if self.progress is not None:
                self.progress.finish()
        for (path, _), result in zip(todo, results, strict=True):
            out[path] = result
            self.files_hashed += 1
        if self.cache is not None:
            self.cache.flush()
        return out

    def scan(self, real_path: str, tensors: bool = False) -> hashing.FileScan:
        """One file; raises the OSError that prevented reading it."""
        result = self.scan_many([real_path], tensors)[real_path]
        if isinstance(result, OSError):
            raise result
        return result

    def loads(self, real_path: str, name: str) -> PickleScan:
        """What common loaders would unpickle in a file (formats.loaders); name: its path in the
        repository (its suffix matters). From the stat cache when the file is unchanged; raises
        the OSError that prevented reading it."""
        from gate.formats import exposure, sniff  # light: the scanner itself loads on a miss

        named = os.path.splitext(name)[1].lower() in sniff.PICKLE_SUFFIXES
        done = self._loads.get((real_path, named))
        if done is not None:
            return done
        kind = "loads-named" if named else "loads"
        st = os.stat(real_path)
        hit = self.cache.fact_get(kind, real_path, stat_key(st)) if self.cache else None
        result = None
        if hit is not None:
            try:
                result = exposure.from_json(hit)
            except (ValueError, KeyError, TypeError):
                result = None
        if result is None:
            from gate.formats import loaders

            result = loaders.scan(real_path, name)
            if self.cache is not None and stat_key(os.stat(real_path)) == stat_key(st):
                self.cache.fact_put(kind, real_path, stat_key(st), exposure.to_json(result))
        self._loads[(real_path, named)] = result
        return result
