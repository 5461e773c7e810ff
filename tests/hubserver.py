"""Hugging Face Hub stand-ins on loopback, for tests and benchmarks (no internet here).

- `olah`: the PyPI Hub mirror in offline mode, serving real git repositories made here (LFS files
  as pointers in git plus their content under .git/lfs/objects, as git-lfs stores them). It
  ignores Range, so it covers metadata, cards, small files and headers at the start of files.
- `RangeHub`: a small server speaking the part of the Hub API huggingface_hub uses (model info,
  tree listing, resolve with HEAD and ranged GET), serving model folders from disk, counting the
  bytes it sends, and misbehaving on demand (401, gated 403, 404, 500, slow, ignoring Range).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import http.server
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

_GIT = [
    "git",
    "-c",
    "user.name=t",
    "-c",
    "user.email=t@example.invalid",
    "-c",
    "init.defaultBranch=main",
]


def lfs_pointer(data_sha: str, size: int) -> bytes:
    return (
        f"version https://git-lfs.github.com/spec/v1\noid sha256:{data_sha}\nsize {size}\n".encode()
    )


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def git_mirror(mirrors: str, repo_id: str, folder: str) -> str:
    """Commit a model folder as a Hub-style git repository (weights as LFS) for olah; the sha."""
    dest = os.path.join(mirrors, "models", repo_id)
    os.makedirs(dest, exist_ok=True)
    if not os.path.isdir(os.path.join(dest, ".git")):
        subprocess.run([*_GIT, "init", "-q", dest], check=True)
    for name in sorted(os.listdir(folder)):
        src = os.path.join(folder, name)
        if name.endswith((".safetensors", ".gguf", ".bin")):
            sha = sha256_file(src)
            obj = os.path.join(dest, ".git", "lfs", "objects", sha[:2], sha[2:4], sha)
            os.makedirs(os.path.dirname(obj), exist_ok=True)
            shutil.copyfile(src, obj)
            with open(os.path.join(dest, name), "wb") as f:
                f.write(lfs_pointer(sha, os.path.getsize(src)))
        else:
            shutil.copyfile(src, os.path.join(dest, name))
    subprocess.run([*_GIT, "-C", dest, "add", "-A"], check=True)
    subprocess.run([*_GIT, "-C", dest, "commit", "-q", "-m", "upload"], check=True)
    out = subprocess.run([*_GIT, "-C", dest, "rev-parse", "HEAD"], check=True,
                         capture_output=True, text=True)  # fmt: skip
    return out.stdout.strip()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(url: str, proc: subprocess.Popen[bytes] | None = None, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            urllib.request.urlopen(url, timeout=1).close()
            return
        except OSError as e:
            if getattr(e, "code", None) is not None:  # an HTTP answer: the server is up
                return
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


@contextlib.contextmanager
def olah(workdir: str, mirrors: str) -> Iterator[str]:
    """olah on a free loopback port in offline mode; yields the endpoint."""
    port = free_port()
    config = os.path.join(workdir, "olah.toml")
    with open(config, "w") as f:
        f.write(f"""[basic]
host = "127.0.0.1"
port = {port}
repos-path = "{os.path.join(workdir, "olah-repos")}"
mirrors-path = ["{mirrors}"]
mirror-netloc = "127.0.0.1:{port}"
mirror-lfs-netloc = "127.0.0.1:{port}"
[accessibility]
offline = true
""")
    exe = os.path.join(os.path.dirname(sys.executable), "olah-cli")
    log = open(os.path.join(workdir, "olah.log"), "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([exe, "-c", config], cwd=workdir, stdout=log, stderr=log)
    try:
        _wait(f"http://127.0.0.1:{port}/api/models/none/none", proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@dataclasses.dataclass
class Repo:
    folder: str
    sha: str
    branch: str = "main"
    status: int | None = None  # answer every request with this status
    throttle: int = 0  # answer this many requests first with 429 Too Many Requests
    gated: bool = False
    delay: float = 0.0  # seconds before answering
    ignore_range: bool = False
    page: int | None = None  # list the tree this many entries per page (Link: rel="next")
    files: dict[str, tuple[str, int, str | None]] = dataclasses.field(default_factory=dict)
    etags: dict[str, str] = dataclasses.field(default_factory=dict)


class RangeHub:
    """The Hub API subset huggingface_hub needs, serving folders; counts weight bytes sent."""

    def __init__(self) -> None:
        self.repos: dict[str, Repo] = {}
        self.sent: dict[str, int] = {}
        self.requests: list[str] = []
        self.throttled = 0  # 429 answers sent
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def add(self, repo_id: str, folder: str, **behaviour: Any) -> str:
        """Serve a model folder as repo_id; its commit sha is derived from the content."""
        files: dict[str, tuple[str, int, str | None]] = {}
        for name in sorted(os.listdir(folder)):
            path = os.path.join(folder, name)
            lfs = sha256_file(path) if name.endswith((".safetensors", ".gguf")) else None
            files[name] = (path, os.path.getsize(path), lfs)
        digest = hashlib.sha1(
            json.dumps({n: (s, d) for n, (_, s, d) in files.items()}, sort_keys=True).encode()
            + repo_id.encode()
        ).hexdigest()
        etags = {n: lfs or hashlib.sha1(Path(p).read_bytes()).hexdigest()
                 for n, (p, _, lfs) in files.items()}  # fmt: skip
        self.repos[repo_id] = Repo(folder, digest, files=files, etags=etags, **behaviour)
        self.sent[repo_id] = 0
        return digest

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _handler(hub: RangeHub) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def handle(self) -> None:
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                super().handle()  # a client that gave up (timed out) is not a server error

        def do_HEAD(self) -> None:
            self.answer(head=True)

        def do_GET(self) -> None:
            self.answer(head=False)

        def answer(self, head: bool) -> None:
            path = self.path.split("?", 1)[0]
            hub.requests.append(f"{self.command} {path} {self.headers.get('Range', '')}")
            parts = path.strip("/").split("/")
            if parts[:2] == ["api", "datasets"]:  # a dataset is served like a model
                parts[1] = "models"
            elif parts[:1] == ["datasets"]:
                parts = parts[1:]
            if parts[:2] == ["api", "models"] and len(parts) == 4:  # model info, default branch
                repo_id, kind, rev = "/".join(parts[2:4]), "revision", "main"
            elif parts[:2] == ["api", "models"] and len(parts) >= 6:
                repo_id, kind, rev = "/".join(parts[2:4]), parts[4], parts[5]
            elif len(parts) >= 5 and parts[2] == "resolve":
                repo_id, kind, rev = "/".join(parts[:2]), "resolve", parts[3]
            else:
                return self.error(404, "EntryNotFound")
            repo = hub.repos.get(repo_id)
            if repo is None:
                return self.error(404, "RepoNotFound")
            if repo.delay:
                time.sleep(repo.delay)
            if repo.gated:
                return self.error(403, "GatedRepo", "Access to this model is restricted.")
            if repo.status is not None:
                return self.error(repo.status, None)
            if repo.throttle > 0:
                repo.throttle -= 1
                hub.throttled += 1
                return self.error(429, None, "rate limited")
            if rev not in (repo.sha, repo.branch):
                return self.error(404, "RevisionNotFound")
            if kind == "revision":
                siblings = [{"rfilename": n} for n in repo.files]
                return self.json({"id": repo_id, "modelId": repo_id, "sha": repo.sha,
                                  "siblings": siblings, "private": False})  # fmt: skip
            if kind == "tree":
                entries = [
                    {"type": "file", "oid": "0" * 40, "size": size, "path": name}
                    | ({"lfs": {"oid": lfs, "size": size, "pointerSize": 130}} if lfs else {})
                    for name, (_, size, lfs) in repo.files.items()
                ]  # fmt: skip
                if repo.page is None:
                    return self.json(entries)
                query = self.path.split("?", 1)[1] if "?" in self.path else ""
                cursor = int(dict(q.split("=", 1) for q in query.split("&") if "=" in q).get(
                    "cursor", "0"))  # fmt: skip
                more = cursor + repo.page < len(entries)
                link = f'<{hub.endpoint}{path}?cursor={cursor + repo.page}>; rel="next"'
                return self.json(entries[cursor : cursor + repo.page], link if more else None)
            name = "/".join(parts[4:])
            if name not in repo.files:
                return self.error(404, "EntryNotFound")
            return self.file(repo_id, repo, name, head)

        def file(self, repo_id: str, repo: Repo, name: str, head: bool) -> None:
            local, size, lfs = repo.files[name]
            start, end = 0, size - 1
            rng = self.headers.get("Range")
            ranged = bool(rng) and not repo.ignore_range
            if ranged:
                lo, hi = rng.removeprefix("bytes=").split("-")
                start, end = int(lo), min(int(hi), size - 1)
            self.send_response(206 if ranged else 200)
            self.send_header("Content-Length", str(end - start + 1))
            self.send_header("X-Repo-Commit", repo.sha)
            self.send_header("ETag", f'"{repo.etags[name]}"')
            if ranged:
                self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
            self.end_headers()
            if head:
                return
            with open(local, "rb") as f:
                f.seek(start)
                left = end - start + 1
                try:
                    while left > 0:
                        chunk = f.read(min(left, 1 << 20))
                        self.wfile.write(chunk)
                        left -= len(chunk)
                        if lfs:
                            hub.sent[repo_id] += len(chunk)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client stopped reading (an ignored Range it gave up on)

        def json(self, data: object, link: str | None = None) -> None:
            body = json.dumps(data).encode()
            self.send_response(200)
            if link:
                self.send_header("Link", link)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def error(self, status: int, code: str | None, message: str = "error") -> None:
            body = json.dumps({"error": message}).encode()
            self.send_response(status)
            if code:
                self.send_header("X-Error-Code", code)
                self.send_header("X-Error-Message", message)
            if status == 429:
                self.send_header("Retry-After", "1")
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self.wfile.write(body)

    return Handler


def llama_family(
    root: str,
    *,
    hidden: int = 256,
    inter: int = 688,
    vocab: int = 2048,
    layers: int = 4,
    shards: int = 1,
    seed: int = 0,
    kinds: tuple[str, ...] = ("base", "finetune", "independent"),
    license: str = "apache-2.0",
) -> dict[str, str]:
    """Llama-shaped bf16 models with Gaussian weights: a base, a fine-tune (base + 30% noise,
    cos ~0.96 per tensor) and an independent model; each a folder with config.json and a card."""
    import ml_dtypes
    import numpy as np
    from safetensors.numpy import save_file

    names: list[tuple[str, tuple[int, ...]]] = [("model.embed_tokens.weight", (vocab, hidden))]
    for i in range(layers):
        p = f"model.layers.{i}."
        names += [(p + "self_attn.q_proj.weight", (hidden, hidden)),
                  (p + "self_attn.k_proj.weight", (hidden, hidden)),
                  (p + "self_attn.v_proj.weight", (hidden, hidden)),
                  (p + "self_attn.o_proj.weight", (hidden, hidden)),
                  (p + "mlp.gate_proj.weight", (inter, hidden)),
                  (p + "mlp.up_proj.weight", (inter, hidden)),
                  (p + "mlp.down_proj.weight", (hidden, inter)),
                  (p + "input_layernorm.weight", (hidden,)),
                  (p + "post_attention_layernorm.weight", (hidden,))]  # fmt: skip
    names += [("model.norm.weight", (hidden,)), ("lm_head.weight", (vocab, hidden))]
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": hidden,
              "intermediate_size": inter, "num_hidden_layers": layers,
              "num_attention_heads": max(1, hidden // 64), "vocab_size": vocab}  # fmt: skip
    out = {k: os.path.join(root, k) for k in kinds}
    rng = {k: np.random.default_rng([seed, i]) for i, k in enumerate(("base", "noise", "ind"))}
    per_shard = -(-len(names) // shards)
    for k, folder in out.items():
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, "config.json"), "w") as f:
            json.dump(config, f)
        with open(os.path.join(folder, "README.md"), "w") as f:
            f.write(f"---\nlicense: {license}\n---\n# {k}\n")
    for s in range(shards):
        part: dict[str, dict[str, Any]] = {k: {} for k in out}
        for name, shape in names[s * per_shard : (s + 1) * per_shard]:
            norm = name.endswith("norm.weight")
            scale, shift = (0.1, 1.0) if norm else (0.02, 0.0)
            base = shift + scale * rng["base"].standard_normal(shape, dtype=np.float32)
            ind = shift + scale * rng["ind"].standard_normal(shape, dtype=np.float32)
            noise = 0.3 * scale * rng["noise"].standard_normal(shape, dtype=np.float32)
            made = {"base": base, "finetune": base + noise, "independent": ind}
            for k in out:
                part[k][name] = made[k].astype(ml_dtypes.bfloat16)
        for k, folder in out.items():
            file = "model.safetensors" if shards == 1 else (
                f"model-{s + 1:05d}-of-{shards:05d}.safetensors")  # fmt: skip
            save_file(part[k], os.path.join(folder, file), metadata={"format": "pt"})
    return out
