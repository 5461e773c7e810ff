"""`provenance-gate audit`: many models, each identified against the pack indexes (and checked
when it is a local repository with a manifest), on a `concurrent.futures` executor.

The per-model work (`run_one`) is a plain top-level function of plain arguments, so any
executor runs it: a thread pool, a process pool (the default), or an existing Dask cluster
through `distributed.Client(address).get_executor()` (the `dask` extra, imported only then); no
scheduler of our own. Results stream to a JSON Lines file as they complete, one object per
model; a rerun with `--resume` reads the file, drops a last line cut short by an interruption,
and audits only the models without a result. Hub models (`hf://owner/name@revision`) are
identified from their headers and the packs' rows (range requests), with more patience for the
Hub's rate limits (HTTP 429: huggingface_hub waits as Retry-After says) than a single check.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from typing import Any

from gate.errors import GateError

MAX_LIST_BYTES = 64 << 20
MAX_ENTRY = 4096
AUDIT_RETRIES = 8  # per Hub request, on 429 and 5xx
AUDIT_MAX_WAIT = 60.0  # seconds between retries at most (unless the Hub's Retry-After says more)


@dataclasses.dataclass(frozen=True)
class Job:
    """One model to audit and everything the worker needs (picklable)."""

    entry: str  # as the list writes it
    path: str | None  # the local folder, resolved; None for a Hub model
    indexes: tuple[str, ...]
    alpha: float
    offline: bool
    cache_dir: str | None


def read_list(path: str) -> list[str]:
    """The entries of a list file: one local path or hf:// id per line; blank lines and lines
    starting with # are skipped; duplicates are audited once."""
    try:
        size = os.path.getsize(path)
        if size > MAX_LIST_BYTES:
            raise GateError(f"{size} bytes, over the {MAX_LIST_BYTES}-byte cap", where=path)
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except UnicodeDecodeError:
        raise GateError("not UTF-8 text", where=path) from None
    except OSError as e:
        raise GateError(f"cannot read the list: {e.strerror}", where=path) from None
    out: dict[str, None] = {}
    for n, line in enumerate(lines, 1):
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        if len(entry) > MAX_ENTRY or any(ord(c) < 32 for c in entry):
            raise GateError(f"line {n}: not a path or hf:// id", where=path)
        out[entry] = None
    return list(out)


def jobs(
    list_path: str, indexes: tuple[str, ...], alpha: float, offline: bool, cache_dir: str | None
) -> list[Job]:
    base = os.path.dirname(os.path.abspath(list_path))
    out = []
    for entry in read_list(list_path):
        local = None if entry.startswith("hf://") else os.path.join(base, entry)
        out.append(Job(entry, local, indexes, alpha, offline, cache_dir))
    return out


def finished(output: str) -> set[str]:
    """The entries the results file already holds; a last line cut short by an interruption is
    cut off the file (it is audited again)."""
    if not os.path.exists(output):
        return set()
    with open(output, "rb+") as f:
        data = f.read()
        keep = data.rfind(b"\n") + 1
        if keep < len(data):
            f.truncate(keep)
    done = set()
    for line in data[:keep].splitlines():
        try:
            doc = json.loads(line)
        except ValueError:
            continue
        if isinstance(doc, dict) and isinstance(doc.get("model"), str):
            done.add(doc["model"])
    return done


def run_one(job: Job) -> dict[str, Any]:
    """Identify one model (and check it when it is a local repository with a manifest). Never
    raises: a model that cannot be audited gets an `error` result."""
    started = time.perf_counter()
    result: dict[str, Any] = {"model": job.entry}
    try:
        if job.path is None:
            result["identify"] = _identify_hub(job)
            result["check"] = {"skipped": "a Hub model is identified; clone it to check it"}
        else:
            if not os.path.exists(job.path):
                raise GateError(f"{job.entry}: no such file or folder")
            result["identify"] = _identify_local(job)
            result["check"] = _check(job)
        result["status"] = "ok"
    except GateError as e:
        result.update(status="error", error=str(e))
    except Exception as e:  # a bug: one model's, reported in its line, not the whole audit's
        result.update(status="error", error=f"internal error: {type(e).__name__}: {e}"[:500])
    result["seconds"] = round(time.perf_counter() - started, 3)
    return result


def _identify_local(job: Job) -> dict[str, Any]:
    from gate.errors import NothingToCheck
    from gate.lineage import identify
    from gate.scanner import Scanner

    try:
        found = identify.identify(
            job.path or "", job.indexes, Scanner(), job.alpha, job.cache_dir, job.offline
        )
    except NothingToCheck as e:
        return {"result": "not identified", "why": e.message}
    return _summary(found)


def _identify_hub(job: Job) -> dict[str, Any]:
    from gate import hubclient
    from gate.lineage import identify
    from gate.settings import Settings

    if not hubclient.available():
        raise GateError("Hub models need huggingface_hub", hint="pip install the `hub` extra")
    settings = Settings.from_environment(cache_dir=job.cache_dir, offline=job.offline)
    hub = hubclient.HubClient(settings, offline=job.offline)
    hub.retries, hub.max_wait = AUDIT_RETRIES, AUDIT_MAX_WAIT
    entries = identify.load_entries(job.indexes, job.cache_dir, job.offline)
    found = identify.identify_hub(hub, job.entry, entries, job.alpha)
    return _summary(found)


def _summary(found: Any) -> dict[str, Any]:
    doc: dict[str, Any] = found.as_dict()
    doc.pop("compared", None)  # the bases are what an audit is read for
    doc.pop("candidate", None)
    for m in doc["bases"]:
        m.pop("effects", None)
    return doc


def _check(job: Job) -> dict[str, Any]:
    from gate import checks
    from gate.evidence import Options, Target

    assert job.path is not None
    if not os.path.isdir(job.path) or not os.path.exists(os.path.join(job.path, "provenance.yaml")):
        return {"skipped": "no provenance.yaml"}
    from gate import hubclient
    from gate.settings import Settings

    settings = Settings.from_environment(cache_dir=job.cache_dir, offline=job.offline)
    options = Options(strict=True, cache_dir=settings.cache_dir, offline=settings.hub_offline)
    connect = (
        (lambda: hubclient.HubClient(settings, offline=job.offline))
        if hubclient.available()
        else None
    )
    report = checks.check(Target.resolve(job.path, None), options, None, connect)
    by: dict[str, list[str]] = {}
    for f in report.findings:
        by.setdefault(f.severity, []).append(f.rule)
    return {"exit_code": report.exit_code, **{k: sorted(v) for k, v in by.items()}}


@dataclasses.dataclass
class Pool:
    """An executor and how to release it."""

    executor: Executor
    close: Callable[[], None]
    workers: int
    kind: str


def pool(spec: str, workers: int) -> Pool:
    """`thread`, `process` (spawned, so a worker never inherits a lock or a thread of ours) or
    `dask://HOST:PORT` (an existing scheduler; `distributed` is imported only here)."""
    if spec == "thread":
        ex: Executor = ThreadPoolExecutor(workers)
        return Pool(ex, lambda: ex.shutdown(cancel_futures=True), workers, "thread")
    if spec == "process":
        import multiprocessing

        ex = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
        return Pool(ex, lambda: ex.shutdown(cancel_futures=True), workers, "process")
    if spec.startswith("dask://"):
        import importlib

        try:  # untyped: held as Any
            distributed: Any = importlib.import_module("distributed")
        except ImportError:
            raise GateError(
                "--executor dask:// needs dask.distributed", hint="pip install the `dask` extra"
            ) from None
        address = "tcp://" + spec.removeprefix("dask://")
        try:
            client = distributed.Client(address, timeout="3s")
        except OSError as e:
            raise GateError(f"no Dask scheduler at {address}: {e}") from None
        n = sum(w.get("nthreads", 1) for w in client.scheduler_info().get("workers", {}).values())
        return Pool(client.get_executor(), client.close, max(1, n), "dask")
    raise GateError(f"unknown executor {spec!r}", hint="thread, process or dask://HOST:PORT")


@dataclasses.dataclass(frozen=True)
class Summary:
    audited: int
    skipped: int  # already in the results file (--resume)
    found: int  # models with a known base
    errors: int
    seconds: float


def audit(
    todo: list[Job],
    output: str | None,
    executor: Pool,
    resume: bool,
    emit: Callable[[str], None],
    progress: Callable[[int, int], None] | None = None,
) -> Summary:
    """Run every job not yet in the results file; each result is written (and flushed) as soon
    as it completes, so an interrupted audit loses at most the models in flight."""
    started = time.perf_counter()
    done = finished(output) if (resume and output) else set()
    if output is not None and not resume and os.path.exists(output):
        os.remove(output)
    pending = [j for j in todo if j.entry not in done]
    found = errors = 0
    sink = open(output, "a", encoding="utf-8") if output else None  # noqa: SIM115
    try:
        for k, result in enumerate(_results(executor, pending), 1):
            line = json.dumps(result, sort_keys=True)
            if sink is not None:
                sink.write(line + "\n")
                sink.flush()
            else:
                emit(line)
            found += bool(result.get("identify", {}).get("bases"))
            errors += result.get("status") != "ok"
            if progress is not None:
                progress(k, len(pending))
    finally:
        if sink is not None:
            sink.close()
    return Summary(
        len(pending), len(todo) - len(pending), found, errors, time.perf_counter() - started
    )


def _results(executor: Pool, jobs_: list[Job]) -> Iterator[dict[str, Any]]:
    """Results in completion order, with at most twice the workers' count in flight (a list of
    a million models is not a million futures)."""
    todo = iter(jobs_)
    running: set[Future[dict[str, Any]]] = set()
    limit = 2 * executor.workers
    while True:
        for job in todo:
            running.add(executor.executor.submit(run_one, job))
            if len(running) >= limit:
                break
        if not running:
            return
        done, running = wait_futures(running, return_when="FIRST_COMPLETED")
        for fut in done:
            yield fut.result()
