from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from gate import hashing
from gate.cache import DB_NAME, StatCache, stat_key
from gate.scanner import Scanner
from gate.settings import default_cache_dir
from tests.helpers import write_st


def scanner(cache_dir: Path) -> Scanner:
    return Scanner(cache=StatCache(str(cache_dir)))


def test_unchanged_file_is_not_read_again(tmp_path: Path) -> None:
    path = str(write_st(tmp_path / "m.safetensors"))
    first = scanner(tmp_path / "c")
    a = first.scan(path, tensors=True)
    first.cache.close()  # type: ignore[union-attr]
    second = scanner(tmp_path / "c")
    b = second.scan(path, tensors=True)
    assert (second.files_hashed, second.cache.hits) == (0, 1)  # type: ignore[union-attr]
    assert a == b and b.tensors is not None


def test_every_stat_field_invalidates(tmp_path: Path) -> None:
    cache = StatCache(str(tmp_path))
    scan = hashing.FileScan(size=3, sha256="ab" * 32, format="other")
    key = (1, 2, 3, 4, 5)
    cache.put("/x", key, scan)
    cache.flush()
    assert cache.get("/x", key) == scan
    for field in range(5):
        changed = list(key)
        changed[field] += 1
        assert cache.get("/x", tuple(changed)) is None, field  # type: ignore[arg-type]
    assert cache.get("/y", key) is None


@pytest.mark.parametrize(
    "change", ["content-same-size-mtime-restored", "touch", "grow", "new-inode"]
)
def test_changed_files_are_rehashed(tmp_path: Path, change: str) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(b"a" * 100)
    s1 = scanner(tmp_path / "c")
    old = s1.scan(str(path))
    s1.cache.close()  # type: ignore[union-attr]
    st = path.stat()
    if change == "content-same-size-mtime-restored":
        path.write_bytes(b"b" * 100)
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # only ctime betrays the change
    elif change == "touch":
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    elif change == "grow":
        path.write_bytes(b"a" * 101)
    else:
        (tmp_path / "g.bin").write_bytes(b"a" * 100)
        os.replace(tmp_path / "g.bin", path)
    s2 = scanner(tmp_path / "c")
    new = s2.scan(str(path))
    assert s2.files_hashed == 1
    assert new.sha256 == hashing.scan(str(path)).sha256
    if change == "content-same-size-mtime-restored":
        assert new.sha256 != old.sha256


def test_corrupted_database_is_rebuilt(tmp_path: Path) -> None:
    cache_dir = tmp_path / "c"
    cache_dir.mkdir()
    (cache_dir / DB_NAME).write_bytes(b"this is not a database" * 100)
    path = str(write_st(tmp_path / "m.safetensors"))
    s = scanner(cache_dir)
    assert s.scan(path, tensors=True).tensors is not None
    s.cache.close()  # type: ignore[union-attr]
    with sqlite3.connect(cache_dir / DB_NAME) as db:
        assert db.execute("SELECT count(*) FROM scans").fetchone() == (1,)


def test_tampered_row_is_not_trusted(tmp_path: Path) -> None:
    path = str(write_st(tmp_path / "m.safetensors"))
    s = scanner(tmp_path / "c")
    real = s.scan(path)
    s.cache.close()  # type: ignore[union-attr]
    with sqlite3.connect(tmp_path / "c" / DB_NAME) as db:
        payload = db.execute("SELECT payload FROM scans").fetchone()[0]
        db.execute("UPDATE scans SET payload = ?", (payload.replace(real.sha256, "0" * 64),))
    s2 = scanner(tmp_path / "c")
    assert s2.scan(path).sha256 == real.sha256
    assert s2.files_hashed == 1


def test_unwritable_cache_dir_runs_uncached(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    s = scanner(blocker / "sub")  # cannot be created
    path = str(write_st(tmp_path / "m.safetensors"))
    assert s.scan(path, tensors=True).tensors is not None
    s.cache.close()  # type: ignore[union-attr]


def test_changed_while_hashed_is_never_cached(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(b"x" * 4096)

    class Grow:
        def start(self, total: int, files: int) -> None: ...

        def advance(self, n: int) -> None:
            with open(path, "ab") as f:
                f.write(b"y")

        def finish(self) -> None: ...

    s = Scanner(cache=StatCache(str(tmp_path / "c")), progress=Grow())
    assert s.scan(str(path)).changed
    s.cache.close()  # type: ignore[union-attr]
    s2 = scanner(tmp_path / "c")
    assert not s2.scan(str(path)).changed
    assert s2.files_hashed == 1


def test_memo_is_keyed_by_exact_bytes(tmp_path: Path) -> None:
    cache = StatCache(str(tmp_path))
    cache.memo_put("manifest", b"abc", "payload")
    cache.flush()
    assert cache.memo_get("manifest", b"abc") == "payload"
    assert cache.memo_get("manifest", b"abd") is None
    assert cache.memo_get("lock", b"abc") is None


def test_default_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PROVENANCE_GATE_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", "/xdg")
    assert default_cache_dir() == "/xdg/provenance-gate"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert default_cache_dir().endswith(".cache/provenance-gate")


def test_stat_key_fields(tmp_path: Path) -> None:
    st = (tmp_path).stat()
    assert stat_key(st) == (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def test_concurrent_runs_share_the_cache_safely(tmp_path: Path) -> None:
    repos = []
    for i in range(4):
        root = tmp_path / f"r{i}"
        write_st(root / "model.safetensors", seed=i)
        (root / "provenance.yaml").write_text(
            "version: 1\nmodel: {name: x, license: mit, origin: scratch}\n"
        )
        repos.append(root)
    script = Path(sys.executable).parent / "provenance-gate"
    env = {**os.environ, "PROVENANCE_GATE_CACHE_DIR": str(tmp_path / "shared")}
    for command in ("init", "check"):
        procs = [
            subprocess.Popen(
                [script, command, str(r)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
            )
            for r in repos
        ]
        for p in procs:
            out, err = p.communicate(timeout=120)
            assert p.returncode == 0, (command, out, err)
    with sqlite3.connect(tmp_path / "shared" / DB_NAME) as db:
        assert db.execute("SELECT count(*) FROM scans").fetchone() == (4,)
