"""An in-memory Hub (the gate.hubclient.Hub protocol) for fast unit tests of the Hub-base and
remote-lineage logic. The real client is tested against stand-ins on loopback (test_hub.py,
test_hub_olah.py); this one answers from dictionaries, and fails the way a test says."""

from __future__ import annotations

import dataclasses
import hashlib

from gate.hubclient import HubError, HubFile


@dataclasses.dataclass
class FakeRepo:
    sha: str
    files: dict[str, bytes]
    error: HubError | None = None  # raised by every call on this repository


class FakeHub:
    def __init__(self, offline: bool = False) -> None:
        self.offline = offline
        self.repos: dict[str, FakeRepo] = {}
        self.calls: list[tuple[str, str]] = []  # (method, repo)

    def add(self, repo: str, files: dict[str, bytes], error: HubError | None = None) -> str:
        sha = hashlib.sha1(repo.encode() + b"".join(sorted(files.values()))).hexdigest()
        self.repos[repo] = FakeRepo(sha, files, error)
        return sha

    def _repo(self, method: str, repo: str, sha: str | None = None) -> FakeRepo:
        self.calls.append((method, repo))
        found = self.repos.get(repo)
        if found is None:
            raise HubError("not-found", f"{repo}: no such model")
        if found.error is not None:
            raise found.error
        if self.offline and method != "local_file":
            raise HubError("offline", f"offline (HF_HUB_OFFLINE): cannot read {repo}")
        if sha is not None and sha != found.sha:
            raise HubError("not-found", f"{repo}@{sha}: no such revision")
        return found

    def resolve(self, repo: str, revision: str | None) -> str:
        found = self._repo("resolve", repo)
        if revision not in (None, "main", found.sha):
            raise HubError("not-found", f"{repo}@{revision}: no such revision")
        return found.sha

    def files(self, repo: str, sha: str) -> tuple[HubFile, ...]:
        found = self._repo("files", repo, sha)
        return tuple(
            HubFile(
                p, len(b), hashlib.sha256(b).hexdigest() if p.endswith(".safetensors") else None
            )
            for p, b in sorted(found.files.items())
        )

    def read_small(self, repo: str, sha: str, path: str) -> bytes | None:
        return self._repo("read_small", repo, sha).files.get(path)

    def read_range(self, repo: str, sha: str, f: HubFile, start: int, length: int) -> bytes:
        return self._repo("read_range", repo, sha).files[f.path][start : start + length]

    def local_file(self, repo: str, sha: str, path: str) -> str | None:
        return None  # nothing in a Hugging Face cache: the gate samples with read_range
