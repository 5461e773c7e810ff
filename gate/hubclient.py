"""All Hugging Face Hub access, through `huggingface_hub` (the only module that imports it).

What the gate reads from the Hub, always at a pinned commit: the file list with each LFS file's
sha256 and size, small files (model card, config, tokenizer) through the standard Hugging Face
cache, and byte ranges of weight files (safetensors headers, sampled rows). Nothing here
downloads a whole weight file. Offline (`--offline` or HF_HUB_OFFLINE) only caches are read.

Caches: small files live in the Hugging Face cache (hf_hub_download); file lists and byte ranges
of a pinned commit are immutable, so they are kept under the gate's cache folder keyed by
endpoint, repository and commit. Those caches are trusted like the Hugging Face cache itself.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Literal, Protocol, TypeVar

from gate import paths
from gate.formats import registry
from gate.settings import Settings

if TYPE_CHECKING:
    from collections.abc import Iterator

T = TypeVar("T")
SHA = re.compile(r"^[0-9a-f]{40}$")
REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
MAX_SMALL_FILE = 64 << 20  # card, config, tokenizer: anything larger is not metadata
MAX_RANGE = 64 << 20  # one ranged request
MAX_FILES = 100_000  # entries of one repository listing
MAX_PAGE = 64 << 20  # bytes of one listing page
# A server that ignores Range answers 200 with the whole file; up to this many leading bytes are
# still taken from such a stream (headers sit at the start), further ones are refused.
IGNORED_RANGE_CAP = 8 << 20
RETRIES = 2  # on timeouts, network errors, 429 and 5xx: at most 3 attempts per request

Kind = Literal["offline", "unreachable", "not-found", "revision-not-found", "denied", "invalid"]


class HubError(Exception):
    """The Hub could not answer: why (kind), what happened, and what to do."""

    def __init__(self, kind: Kind, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.kind, self.message, self.hint = kind, message, hint


@dataclasses.dataclass(frozen=True)
class HubFile:
    path: str
    size: int
    sha256: str | None  # the LFS oid; None for files stored in git itself


class Hub(Protocol):
    """The seam the checks use; HubClient is the real one."""

    offline: bool

    def resolve(self, repo: str, revision: str | None) -> str: ...
    def files(self, repo: str, sha: str) -> tuple[HubFile, ...]: ...
    def read_small(self, repo: str, sha: str, path: str) -> bytes | None: ...
    def read_range(self, repo: str, sha: str, f: HubFile, start: int, length: int) -> bytes: ...
    def local_file(self, repo: str, sha: str, path: str) -> str | None: ...


def available() -> bool:
    """Whether huggingface_hub is installed (found, not imported: start-up stays light)."""
    import importlib.util

    return importlib.util.find_spec("huggingface_hub") is not None


class HubClient:
    """The Hub through huggingface_hub: endpoint, timeout and caches from the run's Settings
    (gate/settings.py), the token from huggingface_hub (HF_TOKEN or the stored login)."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        offline: bool = False,
        cache_dir: str | None = None,
    ) -> None:
        import huggingface_hub

        settings = settings or Settings.from_environment(cache_dir=cache_dir, offline=offline)
        self.offline = offline or settings.hub_offline
        self.endpoint = settings.hub_endpoint
        self.timeout = settings.hub_timeout
        self.api = huggingface_hub.HfApi(endpoint=self.endpoint)
        self.hf_cache = settings.hf_cache
        key = hashlib.sha256(self.endpoint.encode()).hexdigest()[:12]
        self.meta_dir = os.path.join(cache_dir or settings.cache_dir, "hub", key)
        self._files: dict[tuple[str, str], tuple[HubFile, ...]] = {}
        # retries on timeouts, 429 and 5xx (huggingface_hub waits as a 429's Retry-After or
        # RateLimit header says); an org-scale audit raises both (gate/audit.py)
        self.retries, self.max_wait = RETRIES, 2.0
        if not self.offline:
            # huggingface_hub's shared client has no timeout: a stalled server would hang the gate
            huggingface_hub.get_session().timeout = self.timeout
        if not settings.verbose:  # its retry chatter is not our report
            logging.getLogger("huggingface_hub").setLevel(logging.ERROR)

    # ------------------------------------------------------------------ revisions and files
    def resolve(self, repo: str, revision: str | None) -> str:
        """The full commit sha a revision (branch, tag, short or full sha; None: main) names."""
        if revision is not None and SHA.match(revision):
            return revision  # a pinned commit: files() at it proves it exists
        self._online(f"resolving {repo}@{revision or 'main'}")
        info = self._call(
            repo,
            revision,
            lambda: self.api.model_info(repo, revision=revision, timeout=self.timeout),
        )
        sha = getattr(info, "sha", None)
        if not isinstance(sha, str) or not SHA.match(sha):
            raise HubError("invalid", f"{repo}@{revision}: the Hub returned no commit sha")
        return sha

    def files(self, repo: str, sha: str) -> tuple[HubFile, ...]:
        """Every file at the commit, with LFS sha256 and size (cached: a commit never changes)."""
        if (repo, sha) in self._files:
            return self._files[(repo, sha)]
        path = os.path.join(self._meta(repo, sha), "tree.json")
        out = _read_tree(path)
        if out is None and self.offline:
            out = self._cached_tree(repo, sha)
        if out is None:
            self._online(f"listing {repo}@{sha[:12]}")
            out = self._call(repo, sha, lambda: self._list_tree(repo, sha))
            _write_json(path, [dataclasses.asdict(f) for f in out])
        self._files[(repo, sha)] = out
        return out

    def _cached_tree(self, repo: str, sha: str) -> tuple[HubFile, ...] | None:
        """Offline: the listing huggingface_hub keeps beside a snapshot, else the snapshot folder
        itself, where an LFS file links to a blob named by its sha256 (checked when read)."""
        import huggingface_hub

        tree = None
        with contextlib.suppress(Exception):  # any failure here only means "not cached"
            tree = huggingface_hub.get_cached_repo_tree(repo, revision=sha, cache_dir=self.hf_cache)
        if tree:
            return tuple(
                HubFile(e.path, int(e.size), e.lfs.sha256 if e.lfs else None)
                for e in tree
                if hasattr(e, "size")
            )
        snap = os.path.join(self.hf_cache, f"models--{repo.replace('/', '--')}", "snapshots", sha)
        if not os.path.isdir(snap):
            return None
        out = []
        for rel in paths.walk_files(snap):
            full = os.path.join(snap, rel)
            blob = os.path.basename(os.path.realpath(full))
            sha256 = blob if re.fullmatch(r"[0-9a-f]{64}", blob) else None
            out.append(HubFile(rel, os.path.getsize(full), sha256))
        # a snapshot folder holds what was downloaded, not necessarily every file: it stands in
        # for the listing only when it has weights and every shard its index names
        names = {f.path for f in out}
        if not any(n.endswith(registry.TENSOR_SUFFIXES) for n in names):
            return None
        for index in (n for n in names if n.endswith(".safetensors.index.json")):
            with contextlib.suppress(OSError, ValueError, AttributeError):
                with open(os.path.join(snap, index), encoding="utf-8") as f:
                    shards = set(json.load(f).get("weight_map", {}).values())
                if not shards <= names:
                    return None
        return tuple(out)

    # ------------------------------------------------------------------ contents
    def read_small(self, repo: str, sha: str, path: str) -> bytes | None:
        """A small file (card, config, tokenizer) through the Hugging Face cache; None when the
        commit has no such file."""
        import huggingface_hub

        listed = {f.path: f for f in self.files(repo, sha)}
        if path not in listed:
            return None
        if listed[path].size > MAX_SMALL_FILE:
            raise HubError("invalid", f"{repo}/{path} is {listed[path].size} bytes: too large")
        local = self.local_file(repo, sha, path)
        if local is None:
            self._online(f"reading {repo}/{path}")
            local = self._call(
                repo,
                sha,
                lambda: huggingface_hub.hf_hub_download(
                    repo,
                    path,
                    revision=sha,
                    endpoint=self.endpoint,
                    cache_dir=self.hf_cache,
                    etag_timeout=self.timeout,
                ),
            )
        try:
            with paths.open_regular(str(local)) as f:
                return paths.read_capped(f, MAX_SMALL_FILE)
        except OSError as e:
            raise HubError("invalid", f"{repo}/{path}: cached copy unreadable: {e}") from e

    def local_file(self, repo: str, sha: str, path: str) -> str | None:
        """The file's path in the Hugging Face cache at this commit, if it is there."""
        import huggingface_hub

        found = huggingface_hub.try_to_load_from_cache(
            repo, path, revision=sha, cache_dir=self.hf_cache
        )
        return found if isinstance(found, str) and os.path.isfile(found) else None

    def read_range(self, repo: str, sha: str, f: HubFile, start: int, length: int) -> bytes:
        """Bytes [start, start+length) of a file: from the range cache, or with one HTTP range
        request. A whole file in the Hugging Face cache is not used here:
        it is read whole, after its sha256 is checked (gate/lineage/remote.py)."""
        if start < 0 or length < 0 or start + length > f.size or length > MAX_RANGE:
            raise HubError("invalid", f"{repo}/{f.path}: range {start}+{length} out of bounds")
        key = hashlib.sha256(f.path.encode()).hexdigest()[:16]
        cached = os.path.join(self._meta(repo, sha), "ranges", f"{key}-{start}-{length}")
        try:
            with open(cached, "rb") as fh:
                data = fh.read()
            if len(data) == length:
                return data
        except OSError:
            pass
        self._online(f"reading {repo}/{f.path}")
        data = self._call(repo, sha, lambda: self._get_range(repo, sha, f.path, start, length))
        _write_bytes(cached, data)
        return data

    def _list_tree(self, repo: str, sha: str) -> tuple[HubFile, ...]:
        """The recursive tree listing, page by page. Done here rather than with
        HfApi.list_repo_tree so that every request has this client's timeout and retry bound
        (the library's pagination sends each page without a timeout)."""
        from huggingface_hub import utils

        url: str | None = f"{self.endpoint}/api/models/{repo}/tree/{sha}"
        params: dict[str, str] | None = {"recursive": "true", "expand": "false"}
        out: list[HubFile] = []
        while url is not None:
            with utils.http_stream_backoff(
                "GET",
                url,
                params=params,
                headers=utils.build_hf_headers(),
                timeout=self.timeout,
                max_retries=self.retries,
                base_wait_time=0.5,
                max_wait_time=self.max_wait,
            ) as resp:
                utils.hf_raise_for_status(resp)
                body = _take(resp.iter_bytes(), 0, MAX_PAGE + 1)
                links = resp.links
            if len(body) > MAX_PAGE:
                raise HubError("invalid", f"{repo}: a file listing page over {MAX_PAGE} bytes")
            for entry in json.loads(body):
                if entry.get("type") != "file":
                    continue
                lfs = entry.get("lfs") or {}
                sha256 = lfs.get("oid") or lfs.get("sha256")
                out.append(
                    HubFile(str(entry["path"]), int(entry["size"]), str(sha256) if sha256 else None)
                )
                if len(out) > MAX_FILES:
                    raise HubError("invalid", f"{repo} lists more than {MAX_FILES} files")
            url, params = links.get("next", {}).get("url"), None
        return tuple(out)

    def _get_range(self, repo: str, sha: str, path: str, start: int, length: int) -> bytes:
        import huggingface_hub
        from huggingface_hub import utils

        url = huggingface_hub.hf_hub_url(repo, path, revision=sha, endpoint=self.endpoint)
        headers = utils.build_hf_headers()
        headers["Range"] = f"bytes={start}-{start + length - 1}"
        headers["Accept-Encoding"] = "identity"  # offsets are into the stored bytes
        with utils.http_stream_backoff(
            "GET",
            url,
            headers=headers,
            max_retries=self.retries,
            base_wait_time=0.5,
            max_wait_time=self.max_wait,
            timeout=self.timeout,
        ) as resp:
            utils.hf_raise_for_status(resp)
            if resp.status_code == 206:
                got = resp.headers.get("Content-Range", "")
                if not got.startswith(f"bytes {start}-"):
                    raise HubError(
                        "invalid",
                        f"{repo}/{path}: asked for bytes {start}-, got {got or 'no Content-Range'}",
                    )
                data = _take(resp.iter_bytes(), 0, length)
            elif start + length <= IGNORED_RANGE_CAP:
                data = _take(resp.iter_bytes(), start, length)
            else:
                raise HubError(
                    "invalid",
                    f"{self.endpoint} ignored a Range request for {repo}/{path}: sampling would"
                    " download the whole file",
                    hint="use an endpoint that honours HTTP Range (the Hub and its CDN do)",
                )
        if len(data) != length:
            raise HubError("invalid", f"{repo}/{path}: short read ({len(data)} of {length} bytes)")
        return data

    # ------------------------------------------------------------------ plumbing
    def _meta(self, repo: str, sha: str) -> str:
        if not REPO_ID.match(repo) or not SHA.match(sha):
            raise HubError("invalid", f"not a pinned Hub model: {repo}@{sha}")
        return os.path.join(self.meta_dir, repo.replace("/", "--"), sha)

    def _online(self, doing: str) -> None:
        if self.offline:
            raise HubError(
                "offline",
                f"offline: {doing} needs the Hub and nothing is cached",
                hint="run once online (the answers are cached), or download the base model"
                " into the Hugging Face cache",
            )

    def _call(self, repo: str, revision: str | None, fn: Callable[[], T]) -> T:
        """Run one Hub call, turning every way it can fail into a HubError."""
        from huggingface_hub import errors

        at = f"{repo}@{revision or 'main'}"
        try:
            return fn()
        except HubError:
            raise
        except errors.GatedRepoError as e:
            raise HubError(
                "denied",
                f"{at} is gated: access not granted to this token (HTTP {_status(e)})",
                hint="accept the model's terms on the Hub and set HF_TOKEN",
            ) from e
        except errors.RevisionNotFoundError as e:
            raise HubError(
                "revision-not-found",
                f"{at}: no such revision on {self.endpoint}",
                hint="pin a commit that exists (see the model's history on the Hub)",
            ) from e
        except errors.RepositoryNotFoundError as e:
            raise HubError(
                "not-found",
                f"{repo}: repository not found, or private (HTTP {_status(e)})",
                hint="check the id; for a private model set HF_TOKEN",
            ) from e
        except errors.EntryNotFoundError as e:
            raise HubError("not-found", f"{at}: a file listed by the Hub is missing") from e
        except errors.OfflineModeIsEnabled as e:
            raise HubError("offline", f"offline (HF_HUB_OFFLINE): cannot read {at}") from e
        except errors.HfHubHTTPError as e:
            code = _status(e)
            if code in ("401", "403"):
                raise HubError(
                    "denied",
                    f"{at}: access denied (HTTP {code})",
                    hint="set HF_TOKEN to a token that can read this model",
                ) from e
            raise HubError("unreachable", f"{at}: the Hub answered HTTP {code}") from e
        except (errors.HTTPError, OSError) as e:  # transport: refused, reset, timed out, DNS
            raise HubError(
                "unreachable", f"{at}: {self.endpoint} unreachable ({type(e).__name__}: {e})"[:300]
            ) from e
        except (ValueError, KeyError, TypeError, AttributeError) as e:  # a malformed answer
            raise HubError("invalid", f"{at}: unexpected answer from {self.endpoint} ({e})") from e


def _status(e: Exception) -> str:
    resp = getattr(e, "response", None)
    return str(getattr(resp, "status_code", "?"))


def _take(chunks: Iterator[bytes], skip: int, length: int) -> bytes:
    """`length` bytes after `skip`, reading no further than needed (the stream is then closed)."""
    out = bytearray()
    pos = 0
    for chunk in chunks:
        lo, hi = max(skip - pos, 0), min(skip + length - pos, len(chunk))
        if hi > lo:
            out += chunk[lo:hi]
        pos += len(chunk)
        if pos >= skip + length:
            break
    return bytes(out)


def _read_tree(path: str) -> tuple[HubFile, ...] | None:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        return tuple(HubFile(str(d["path"]), int(d["size"]), d.get("sha256")) for d in data)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write_json(path: str, data: object) -> None:
    _write_bytes(path, json.dumps(data).encode())


def _write_bytes(path: str, data: bytes) -> None:
    """Cache writes are best effort: a read-only cache costs refetching, never a failure."""
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except OSError:
        pass
