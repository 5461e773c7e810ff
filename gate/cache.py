"""The stat cache: a file whose device, inode, size, mtime and ctime are unchanged is not re-read.

Lives outside the repository (XDG cache dir by default) in SQLite, which serialises concurrent
runs. Every row carries a BLAKE3 check over its key and payload; a row that fails it, or a database
that cannot be read, is discarded and rebuilt, never trusted. ctime is in the key because user
code cannot set it: restoring a modified file's mtime does not fool the cache.
Threat model: whoever can write the cache directory can make the gate skip hashing; use
--no-cache (or a private cache dir) where that directory is shared with untrusted writers.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sqlite3
from typing import Any

import blake3

from gate import __version__, lfs
from gate.hashing import FileScan, TensorDigest

FORMAT = 4  # bump when FileScan's meaning changes: old rows are then simply never found
DB_NAME = f"scans-v{FORMAT}.sqlite"
BUSY_TIMEOUT_S = 10.0

StatKey = tuple[int, int, int, int, int]  # dev, inode, size, mtime_ns, ctime_ns


def stat_key(st: os.stat_result) -> StatKey:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _encode(scan: FileScan) -> str:
    doc: dict[str, Any] = dataclasses.asdict(scan)
    return json.dumps(doc, separators=(",", ":"))


def _decode(payload: str) -> FileScan:
    doc = json.loads(payload)
    pointer = doc["pointer"]
    tensors = doc["tensors"]
    return FileScan(
        size=int(doc["size"]),
        sha256=str(doc["sha256"]),
        format=str(doc["format"]),
        pointer=None if pointer is None else lfs.Pointer(str(pointer["oid"]), int(pointer["size"])),
        pointer_error=doc["pointer_error"],
        tensors=None
        if tensors is None
        else tuple(
            TensorDigest(
                t["name"],
                t["dtype"],
                tuple(t["shape"]),
                t["digest"],
                bool(t["constant"]),
                bool(t["formula"]),
            )
            for t in tensors
        ),
        header_error=doc["header_error"],
        changed=False,
        lazy=bool(doc["lazy"]) and tensors is None,
        depends=tuple(str(d) for d in doc.get("depends") or ()),
    )


def _path_key(path: str) -> bytes:
    """A path as a database key: file names may hold bytes that are not UTF-8 (os.walk gives
    them as lone surrogates, which sqlite refuses as text)."""
    return path.encode("utf-8", "surrogatepass")


def _check(path: str, key: StatKey, payload: str) -> str:
    # The tool version is part of every row's check: a new release re-reads what an older one
    # scanned (its readers may see more, e.g. GGUF tensors), instead of trusting old results.
    doc = [FORMAT, __version__, path, list(key), payload]
    return blake3.blake3(json.dumps(doc).encode()).hexdigest()


def _memo_key(kind: str, data: bytes) -> str:
    # The tool version is in the key: a new release re-validates with its own schema and parser.
    h = blake3.blake3(f"{FORMAT}\0{__version__}\0{kind}\0".encode())
    h.update(data)
    return h.hexdigest()


class StatCache:
    """Scan results keyed by real path and stat; a miss or any doubt means: hash the file."""

    def __init__(self, directory: str) -> None:
        self.path = os.path.join(directory, DB_NAME)
        self._db: sqlite3.Connection | None = None
        self._pending: list[tuple[str, StatKey, str]] = []
        self._pending_facts: list[tuple[str, str, StatKey, str]] = []
        self._pending_memo: list[tuple[str, str, str]] = []
        self.hits = 0
        self.misses = 0
        with contextlib.suppress(OSError):
            os.makedirs(directory, mode=0o700, exist_ok=True)

    def _connect(self) -> sqlite3.Connection | None:
        if self._db is not None:
            return self._db
        for attempt in range(2):
            try:
                db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
                db.execute(
                    "CREATE TABLE IF NOT EXISTS scans (path TEXT PRIMARY KEY, key TEXT NOT NULL,"
                    " payload TEXT NOT NULL, check_ TEXT NOT NULL)"
                )
                db.execute(
                    "CREATE TABLE IF NOT EXISTS memo (key TEXT PRIMARY KEY, payload TEXT NOT NULL,"
                    " check_ TEXT NOT NULL)"
                )
                db.execute(
                    "CREATE TABLE IF NOT EXISTS facts (kind TEXT NOT NULL, path BLOB NOT NULL,"
                    " key TEXT NOT NULL, payload TEXT NOT NULL, check_ TEXT NOT NULL,"
                    " PRIMARY KEY (kind, path))"
                )
                db.execute("SELECT count(*) FROM scans LIMIT 1").fetchone()
                self._db = db
                return db
            except sqlite3.Error:
                # Corrupt or not a database: rebuild it (once); if that fails, run uncached.
                if attempt == 0:
                    with contextlib.suppress(OSError):
                        os.unlink(self.path)
        return None

    def _row(self, sql: str, params: tuple[object, ...]) -> tuple[str, ...] | None:
        db = self._connect()
        if db is None:
            return None
        row: tuple[str, ...] | None = db.execute(sql, params).fetchone()
        return row

    def get(self, path: str, key: StatKey, tensors: bool = False) -> FileScan | None:
        """The cached scan of path if its stat key is unchanged and the row is intact (tensors:
        only one with the per-tensor digests, when the file has a tensor table)."""
        try:
            row = self._row(
                "SELECT key, payload, check_ FROM scans WHERE path = ?", (_path_key(path),)
            )
            if (
                row is None
                or row[0] != json.dumps(list(key))
                or row[2] != _check(path, key, row[1])
            ):
                self.misses += 1
                return None
            scan = _decode(row[1])
        except (sqlite3.Error, ValueError, KeyError, TypeError):
            self.misses += 1
            return None
        if tensors and scan.lazy:
            self.misses += 1
            return None
        self.hits += 1
        return scan

    def put(self, path: str, key: StatKey, scan: FileScan) -> None:
        """Remember a scan made while the file had this stat key (written on flush)."""
        if not scan.changed:
            self._pending.append((path, key, _encode(scan)))

    def flush(self) -> None:
        """Write pending rows in one transaction; a busy or broken database only loses them."""
        db = self._connect()
        rows, self._pending = self._pending, []
        memo, self._pending_memo = self._pending_memo, []
        facts, self._pending_facts = self._pending_facts, []
        if db is None or not (rows or memo or facts):
            return
        try:
            db.execute("BEGIN IMMEDIATE")
            db.executemany(
                "INSERT OR REPLACE INTO scans (path, key, payload, check_) VALUES (?, ?, ?, ?)",
                [(_path_key(p), json.dumps(list(k)), pl, _check(p, k, pl)) for p, k, pl in rows],
            )
            db.executemany(
                "INSERT OR REPLACE INTO facts (kind, path, key, payload, check_)"
                " VALUES (?, ?, ?, ?, ?)",
                [
                    (kind, _path_key(p), json.dumps(list(k)), pl, _check(f"{kind}\0{p}", k, pl))
                    for kind, p, k, pl in facts
                ],
            )
            db.executemany(
                "INSERT OR REPLACE INTO memo (key, payload, check_) VALUES (?, ?, ?)", memo
            )
            db.execute("COMMIT")
        except sqlite3.Error:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")

    def fact_get(self, kind: str, path: str, key: StatKey) -> str | None:
        """A payload stored for (kind, path) while the file had this stat key, if intact."""
        try:
            row = self._row(
                "SELECT key, payload, check_ FROM facts WHERE kind = ? AND path = ?",
                (kind, _path_key(path)),
            )
        except sqlite3.Error:
            return None
        if (
            row is None
            or row[0] != json.dumps(list(key))
            or row[2] != _check(f"{kind}\0{path}", key, row[1])
        ):
            return None
        return str(row[1])

    def fact_put(self, kind: str, path: str, key: StatKey, payload: str) -> None:
        """Remember a payload derived from the file while it had this stat key."""
        self._pending_facts.append((kind, path, key, payload))

    def memo_get(self, kind: str, data: bytes) -> str | None:
        """The payload stored for (kind, exact bytes) by this version of the gate, if intact."""
        key = _memo_key(kind, data)
        try:
            row = self._row("SELECT payload, check_ FROM memo WHERE key = ?", (key,))
        except sqlite3.Error:
            return None
        if row is None or row[1] != _check(key, (0, 0, 0, 0, 0), row[0]):
            return None
        return str(row[0])

    def memo_put(self, kind: str, data: bytes, payload: str) -> None:
        key = _memo_key(kind, data)
        self._pending_memo.append((key, payload, _check(key, (0, 0, 0, 0, 0), payload)))

    def close(self) -> None:
        self.flush()
        if self._db is not None:
            self._db.close()
            self._db = None
