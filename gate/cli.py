"""The command line: options -> engine -> reporter -> exit code. The only module importing click."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, BinaryIO, TextIO, cast, get_args

import click

from gate import __version__, pip_install
from gate.errors import ExitCode, GateError
from gate.findings import FailOn
from gate.reporters import FORMATS  # light: the reporter modules themselves load lazily
from gate.text import no_commands, one_line, visible

if TYPE_CHECKING:
    from gate.findings import Report
    from gate.hubclient import Hub
    from gate.lineage.claims import LineageDepth
    from gate.scanner import Scanner
    from gate.settings import Settings

FAIL_ON = get_args(FailOn)


def _dir_arg(f: Callable[..., Any]) -> Callable[..., Any]:
    f = click.option(
        "--verbose",
        "-v",
        is_flag=True,
        envvar="PROVENANCE_GATE_VERBOSE",
        help="Say on standard error how many files were read and how many came from the cache.",
    )(f)
    f = click.option(
        "--jobs",
        "-j",
        type=click.IntRange(min=1),
        help="Files hashed in parallel (default: the CPUs available).",
    )(f)
    f = click.option(
        "--cache-dir",
        type=click.Path(file_okay=False),
        envvar="PROVENANCE_GATE_CACHE_DIR",
        help="Stat cache folder (default: $XDG_CACHE_HOME/provenance-gate).",
    )(f)
    f = click.option(
        "--no-cache",
        is_flag=True,
        help="Neither read nor write the stat cache: hash every file.",
    )(f)
    f = click.option(
        "--manifest",
        "manifest",
        type=click.Path(dir_okay=False),
        help="Manifest path (default: DIR/provenance.yaml).",
    )(f)
    return click.argument(
        "directory", default=".", metavar="[DIR]", type=click.Path(file_okay=False)
    )(f)


class ReportCopy(click.ParamType):  # type: ignore[type-arg]
    """--report FORMAT:PATH, checked when the command line is parsed (before any work)."""

    name = "FORMAT:PATH"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        kind, sep, path = str(value).partition(":")
        if not sep or kind not in FORMATS or not path:
            self.fail(f"{value!r}: expected FORMAT:PATH with FORMAT one of {', '.join(FORMATS)}")
        return str(value)


def _index_option(text: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """--index (repeatable): pack index folders or hf://datasets/owner/name@<commit>."""
    return click.option(
        "--index",
        "indexes",
        multiple=True,
        callback=lambda ctx, param, value: _index_specs(value),
        help=text,
    )


def _check_index(f: Callable[..., Any]) -> Callable[..., Any]:
    return _index_option(
        "A pack index to look the weights up in, beyond the manifest's"
        " policy.lineage.index: a folder, or hf://datasets/owner/name@<commit> (repeatable)."
    )(f)


def _report_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """--format, --output, --fail-on, --color and --report: the commands that render a Report."""
    f = click.option(
        "--strict/--no-strict",
        default=False,
        envvar="PROVENANCE_GATE_STRICT",
        help="A check that could not run (weights only LFS pointers, a format not inspected, Hub"
        " unreachable, references unusable) is an error, not a note: for CI (the Action's"
        " default).",
    )(f)
    f = click.option(
        "--report",
        "reports",
        multiple=True,
        type=ReportCopy(),
        metavar="FORMAT:PATH",
        help="Also write the report in FORMAT to PATH (repeatable; e.g. sarif:out.sarif).",
    )(f)
    f = click.option(
        "--color/--no-color",
        default=None,
        help="Colour text output (default: when standard output is a terminal).",
    )(f)
    f = click.option(
        "--fail-on",
        type=click.Choice(FAIL_ON),
        default="error",
        show_default=True,
        help="Lowest severity that fails the run (exit 1).",
    )(f)
    f = click.option(
        "--output",
        "-o",
        type=click.Path(dir_okay=False, writable=True),
        help="Write the report to this file instead of standard output.",
    )(f)
    f = click.option(
        "--format",
        "-f",
        "fmt",
        type=click.Choice(FORMATS),
        default="text",
        show_default=True,
        help="Report format.",
    )(f)
    return f


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-V", "--version", prog_name="provenance-gate")
def cli() -> None:
    """Verify a model repository's provenance.yaml against its real weights."""


@cli.command()
@_dir_arg
@_report_options
@click.option(
    "--lineage-depth",
    type=click.Choice(["full", "exact"]),
    default="full",
    show_default=True,
    help="`exact`: look only for bit-identical tensors (fast, for pre-commit); `full`: also the"
    " weight-similarity tiers (needs the lineage extra).",
)
@click.option(
    "--offline",
    is_flag=True,
    envvar="HF_HUB_OFFLINE",
    help="Never contact the Hugging Face Hub: Hub bases are read from the caches only (also"
    " set by HF_HUB_OFFLINE=1).",
)
@_check_index
def check(
    directory: str,
    manifest: str | None,
    no_cache: bool,
    cache_dir: str | None,
    jobs: int | None,
    fmt: str,
    output: str | None,
    fail_on: str,
    color: bool | None,
    reports: tuple[str, ...],
    strict: bool,
    lineage_depth: str,
    offline: bool,
    indexes: tuple[str, ...],
    verbose: bool,
) -> int:
    """Verify the declarations in DIR's manifest (default DIR: the current folder)."""
    from gate import checks

    target = checks.Target.resolve(directory, manifest)
    settings = _settings(cache_dir, offline, verbose)
    options = checks.Options(
        fail_on=cast("FailOn", fail_on),
        lineage_depth=cast("LineageDepth", lineage_depth),
        strict=strict,
        cache_dir=settings.cache_dir,
        indexes=indexes,
        offline=settings.hub_offline,
    )
    with _scanner(no_cache, settings, jobs) as scanner:
        report = checks.check(target, options, scanner, _connect(settings))
    return _render(report, fmt, output, color, reports)


def _lookup_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """--index, --bundled-index, --offline and --alpha, as identify and audit share them."""
    for option in (
        click.option(
            "--alpha",
            type=click.FloatRange(min=0.0, max=1.0, min_open=True),
            default=1e-3,
            show_default=True,
            help="Significance level (after correction for every test and every pack).",
        ),
        click.option(
            "--offline",
            is_flag=True,
            envvar="HF_HUB_OFFLINE",
            help="Never contact the Hugging Face Hub (Hub indexes from the cache only; audit's"
            " hf:// entries then fail).",
        ),
        click.option(
            "--bundled-index/--no-bundled-index",
            default=True,
            show_default=True,
            help="Also look in the index bundled with the gate.",
        ),
        _index_option(
            "A pack index: a folder, or hf://datasets/owner/name@<commit> (repeat for"
            " several); p-values are corrected over all their packs."
        ),
    ):
        f = option(f)
    return f


def _lookup_indexes(indexes: tuple[str, ...], bundled: bool) -> tuple[str, ...]:
    from gate.lineage import index as index_mod

    out = (index_mod.bundled(), *indexes) if bundled else indexes
    if not out:
        raise click.UsageError("no index to look in: pass --index, or drop --no-bundled-index")
    return out


def _index_specs(value: tuple[str, ...]) -> tuple[str, ...]:
    """--index values: existing folders (made absolute) or hf://datasets/owner/name@<commit>."""
    out = []
    for spec in value:
        if spec.startswith("hf://"):
            out.append(spec)
        elif os.path.isdir(spec):
            out.append(os.path.abspath(spec))
        else:
            raise click.BadParameter(f"{spec!r} is not a folder", param_hint="'--index'")
    return tuple(out)


def _settings(cache_dir: str | None, offline: bool = False, verbose: bool = False) -> Settings:
    from gate import settings

    return settings.Settings.from_environment(cache_dir=cache_dir, offline=offline, verbose=verbose)


def _connect(settings: Settings) -> Callable[[], Hub] | None:
    """How to reach the Hub when a Hub model needs it (None: the `hub` extra is missing)."""
    from gate import hubclient

    if not hubclient.available():
        return None
    return lambda: hubclient.HubClient(settings)


def _render(
    report: Report, fmt: str, output: str | None, color: bool | None, extra: tuple[str, ...] = ()
) -> int:
    """Print or write the report in a format (and any --report copies); with `github`, also
    the job summary."""
    from gate import reporters

    copies = [spec.partition(":") for spec in extra]  # each validated by ReportCopy
    workspace = os.environ.get("GITHUB_WORKSPACE") or os.getcwd()
    plain = reporters.ReporterOptions(color=False, workspace=workspace)
    for kind, _, path in copies:
        _emit(reporters.get(kind, plain).render(report), path)
    use_color = color if color is not None else (output is None and sys.stdout.isatty())
    options = reporters.ReporterOptions(color=use_color, workspace=workspace)
    text = reporters.get(fmt, options).render(report)
    _emit(text, output, commands=fmt == "github")
    summary_file = os.environ.get("GITHUB_STEP_SUMMARY")
    if fmt == "github" and summary_file:
        summary = reporters.get("markdown", options).render(report)
        try:
            with open(summary_file, "a", encoding="utf-8") as f:
                f.write(summary + "\n")
        except OSError as e:
            raise GateError(
                f"cannot append the job summary: {e.strerror}", where=summary_file
            ) from None
    return report.exit_code


@cli.command("diff")
@_dir_arg
@click.option("--base", "base_ref", required=True, help="The git revision to compare with.")
@click.option(
    "--head",
    "head_ref",
    help="The revision to compare (default: the working tree, which is then also checked).",
)
@_report_options
@_check_index
def diff_command(
    directory: str,
    manifest: str | None,
    no_cache: bool,
    cache_dir: str | None,
    jobs: int | None,
    base_ref: str,
    head_ref: str | None,
    fmt: str,
    output: str | None,
    fail_on: str,
    color: bool | None,
    reports: tuple[str, ...],
    strict: bool,
    indexes: tuple[str, ...],
    verbose: bool,
) -> int:
    """What changed in DIR's declarations between --base and --head (a pull request's view)."""
    from gate import checks, diff

    target = checks.Target.resolve(directory, manifest)
    rel = os.path.relpath(target.manifest_path, target.root)
    base = diff.load(target.root, rel, base_ref)
    head = diff.load(target.root, rel, head_ref)
    found = diff.changes(base, head)
    verified = None
    if head_ref is None:
        settings = _settings(cache_dir, verbose=verbose)
        options = checks.Options(
            fail_on=cast("FailOn", fail_on),
            strict=strict,
            cache_dir=settings.cache_dir,
            indexes=indexes,
            offline=settings.hub_offline,
        )
        with _scanner(no_cache, settings, jobs) as scanner:
            verified = checks.check(target, options, scanner, _connect(settings))
    report = diff.report(target.root, target.manifest_display, found, verified)
    report = dataclasses.replace(report, fail_on=cast("FailOn", fail_on))
    return _render(report, fmt, output, color, reports)


@cli.command()
@click.argument("candidate", type=click.Path(exists=True))
@click.option(
    "--reference",
    "-r",
    "references",
    multiple=True,
    required=True,
    help="A reference model: a folder, a weight file, or a Hub model hf://owner/name@revision"
    " (sampled with range requests unless it is in the Hugging Face cache); repeat for several.",
)
@click.option(
    "--format",
    "-f",
    "fmt",
    type=click.Choice(["text", "json", "markdown"]),
    default="text",
    show_default=True,
    help="Report format.",
)
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, writable=True),
    help="Write the report to this file instead of standard output.",
)
@click.option(
    "--alpha",
    type=click.FloatRange(min=0.0, max=1.0, min_open=True),
    default=1e-3,
    show_default=True,
    help="Significance level for dependence (after correction for every test and reference).",
)
@click.option(
    "--fail-if-dependent",
    is_flag=True,
    help="Exit 1 when the candidate depends on any reference (e.g. to test a scratch claim).",
)
@click.option(
    "--offline",
    is_flag=True,
    envvar="HF_HUB_OFFLINE",
    help="Never contact the Hugging Face Hub: hf:// references come from the caches only.",
)
@click.option(
    "--probe",
    is_flag=True,
    help="Also run the logit probe (needs the torch extra): both models on a fixed multilingual"
    " prompt set, with an empirical p-value against independent models.",
)
@click.option(
    "--device",
    default="cpu",
    show_default=True,
    help="torch device for --probe (e.g. cuda, cuda:1).",
)
def lineage(
    candidate: str,
    references: tuple[str, ...],
    fmt: str,
    output: str | None,
    alpha: float,
    fail_if_dependent: bool,
    offline: bool,
    probe: bool,
    device: str,
) -> int:
    """How CANDIDATE relates to each reference model, from the weights (and, with --probe, the
    logits)."""
    from gate.lineage.command import audit
    from gate.lineage.render import render

    for ref in references:
        if not ref.startswith("hf://") and not os.path.exists(ref):
            raise click.BadParameter(f"{ref!r} does not exist", param_hint="'--reference'")
    report = audit(candidate, references, alpha, offline, probe, device, _settings(None, offline))
    _emit(render(report, fmt), output)
    if fail_if_dependent and any(v.dependent for v in report.verdicts):
        return int(ExitCode.FAILED)
    return int(ExitCode.PASS)


def _weight_tiers(command: str) -> None:
    from gate.lineage.claims import weight_tiers_available
    from gate.lineage.command import EXTRA_HINT

    if not weight_tiers_available():
        raise GateError(f"{command} needs numpy, scipy, ml_dtypes and gguf", hint=EXTRA_HINT)


@cli.command()
@click.argument("source")
@click.option(
    "--output",
    "-o",
    required=True,
    type=click.Path(dir_okay=False, writable=True),
    help="The pack file to write (by convention NAME.pack.safetensors).",
)
@click.option("--name", help="The pack's name in indexes and reports (default: the source's).")
@click.option(
    "--offline",
    is_flag=True,
    envvar="HF_HUB_OFFLINE",
    help="Never contact the Hugging Face Hub (an hf:// source must then be in the cache).",
)
def fingerprint(source: str, output: str, name: str | None, offline: bool) -> int:
    """Write the reference pack of SOURCE: a local model folder or weight file, or a Hub model
    hf://owner/name@revision (read with range requests: headers and sampled rows only)."""
    from gate.lineage import pack

    _weight_tiers("fingerprint")
    hub = None
    settings = _settings(None, offline)
    if source.startswith("hf://"):
        from gate import hubclient

        if not hubclient.available():
            raise GateError("Hub sources need huggingface_hub", hint=pip_install("hub"))
        hub = hubclient.HubClient(settings, offline=offline)
    elif not os.path.exists(source):
        raise click.BadParameter(f"{source!r} does not exist", param_hint="'SOURCE'")
    with _scanner(False, settings, None) as scanner:
        got = pack.fingerprint(source, output, scanner=scanner, hub=hub, name=name)
    counts = got.doc["counts"]
    size = os.path.getsize(output)
    share = 100.0 * size / max(1, int(got.doc["weight_bytes"]))
    click.echo(
        f"wrote {output}: {one_line(got.name)}, {counts['tensors'][0]} of"
        f" {counts['tensors'][1]} tensors,"
        f" {counts['layers'][0]} of {counts['layers'][1]} layers, {size} bytes"
        f" ({share:.2f}% of the weights), {got.content_digest}"
    )
    return int(ExitCode.PASS)


@cli.group("index")
def index_group() -> None:
    """Folders of reference packs that `identify` (and `check`) look bases up in."""


@index_group.command("add")
@click.argument("index", type=click.Path(file_okay=False))
@click.argument("packs", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
def index_add(index: str, packs: tuple[str, ...]) -> int:
    """Verify PACKS, copy them into the INDEX folder (created if needed) and record them."""
    from gate.lineage import index as index_mod

    _weight_tiers("index")
    _, added = index_mod.add(index, packs)
    for e in added:
        click.echo(f"added {one_line(e.name)}: {one_line(e.file)} ({e.content_digest})")
    return int(ExitCode.PASS)


@index_group.command("list")
@click.argument("index", type=click.Path(exists=True))
@click.option(
    "--format", "-f", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True
)
def index_list(index: str, fmt: str) -> int:
    """The packs of INDEX with their sources and signatures."""
    import json

    from gate.lineage import index as index_mod

    got = index_mod.load(index)
    if fmt == "json":
        click.echo(json.dumps([e.as_dict() for e in got.entries], indent=2))
        return int(ExitCode.PASS)
    for e in got.entries:
        s = e.signature
        click.echo(  # names and sources come from index.json: shown, never interpreted
            f"{one_line(e.name)}\t{one_line(e.source)}\t{one_line(s.model_type) or '?'} hidden"
            f" {s.hidden} layers {s.layers} vocab {s.vocab_size}\t{e.size} bytes"
            f"\t{one_line(e.file)}"
        )
    click.echo(f"{len(got.entries)} pack(s)")
    return int(ExitCode.PASS)


@index_group.command("verify")
@click.argument("index", type=click.Path(exists=True))
def index_verify(index: str) -> int:
    """Check every pack of INDEX: present, unaltered (size, SHA-256, content digest), its
    signature as listed; and no unlisted pack in the folder. Exit 1 on any problem."""
    from gate.lineage import index as index_mod

    _weight_tiers("index")
    got = index_mod.load(index)
    problems = index_mod.verify(got)
    for p in problems:
        click.echo(f"problem: {visible(p)}")
    click.echo(f"{len(got.entries)} pack(s), {len(problems)} problem(s)")
    return int(ExitCode.FAILED) if problems else int(ExitCode.PASS)


@cli.command()
@click.argument("candidate", type=click.Path(exists=True))
@_lookup_options
@click.option(
    "--format",
    "-f",
    "fmt",
    type=click.Choice(["text", "json", "markdown"]),
    default="text",
    show_default=True,
    help="Report format.",
)
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, writable=True),
    help="Write the report to this file instead of standard output.",
)
@click.option(
    "--fail-if-found",
    is_flag=True,
    help="Exit 1 when a known base is found (e.g. to test a scratch claim).",
)
def identify(
    candidate: str,
    indexes: tuple[str, ...],
    fmt: str,
    output: str | None,
    alpha: float,
    fail_if_found: bool,
    bundled_index: bool,
    offline: bool,
) -> int:
    """The known bases CANDIDATE derives from, ranked, from indexes of reference packs (the
    bundled index and every --index)."""
    from gate.lineage import identify as identify_mod

    _weight_tiers("identify")
    indexes = _lookup_indexes(indexes, bundled_index)
    settings = _settings(None, offline)
    with _scanner(False, settings, None) as scanner:
        result = identify_mod.identify(
            candidate, indexes, scanner, alpha, settings.cache_dir, settings.hub_offline
        )
    _emit(identify_mod.render(result, fmt), output)
    if fail_if_found and result.found:
        return int(ExitCode.FAILED)
    return int(ExitCode.PASS)


@cli.command()
@click.argument("model_list", metavar="LIST", type=click.Path(exists=True, dir_okay=False))
@_lookup_options
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, writable=True),
    help="Write the JSON Lines results to this file (default: standard output).",
)
@click.option(
    "--resume",
    is_flag=True,
    help="Keep the results already in --output and audit only the models without one.",
)
@click.option(
    "--executor",
    default="process",
    show_default=True,
    help="Where the per-model work runs: thread, process, or dask://HOST:PORT (an existing"
    " Dask scheduler; the `dask` extra).",
)
@click.option(
    "--workers",
    "-j",
    type=click.IntRange(min=1),
    help="Local threads or processes (default: the CPUs available).",
)
def audit(
    model_list: str,
    indexes: tuple[str, ...],
    bundled_index: bool,
    output: str | None,
    resume: bool,
    executor: str,
    workers: int | None,
    alpha: float,
    offline: bool,
) -> int:
    """Identify (and check, where there is a manifest) every model of LIST: one local path or
    hf://owner/name@revision per line. One JSON object per model, as each completes."""
    from gate import audit as audit_mod
    from gate.lineage import index as index_mod
    from gate.scanner import default_workers

    _weight_tiers("audit")
    if resume and output is None:
        raise click.UsageError("--resume needs --output (the results file to resume)")
    indexes = _lookup_indexes(indexes, bundled_index)
    settings = _settings(None, offline)
    # a Hub index is fetched once, here, rather than by every worker at once
    local = tuple(
        index_mod.hub_index(i, settings.cache_dir, settings.hub_offline)
        if index_mod.is_hub_index(i)
        else i
        for i in indexes
    )
    todo = audit_mod.jobs(model_list, local, alpha, settings.hub_offline, settings.cache_dir)
    bar = CountBar(sys.stderr) if sys.stderr.isatty() else None
    pool = audit_mod.pool(executor, workers or default_workers())
    try:
        summary = audit_mod.audit(todo, output, pool, resume, click.echo, bar)
    finally:
        pool.close()
    click.echo(
        f"{summary.audited} model(s) audited ({summary.skipped} already done) on"
        f" {pool.workers} {pool.kind} worker(s) in {summary.seconds:.1f} s: {summary.found} with"
        f" a known base, {summary.errors} error(s)",
        err=True,
    )
    return int(ExitCode.FAILED) if summary.errors else int(ExitCode.PASS)


def _emit(text: str, output: str | None, commands: bool = False) -> None:
    """Write a rendered report; commands: it is the GitHub reporter's, whose annotation lines
    must reach the runner (their data is escaped there), so it bypasses the output guard."""
    if output is None:
        if commands and _GUARD.raw is not None:
            sys.stdout.flush()  # whatever went through the guard comes first
            _GUARD.raw.write(text)
            _GUARD.raw.flush()
        else:  # color=True: keep the colours --color asked for even when piped (click strips
            # them off a non-terminal by default); uncoloured reports carry no escapes at all
            click.echo(text, nl=False, color=True)
        return
    from gate.paths import atomic_write

    try:
        atomic_write(output, text)
    except OSError as e:
        raise GateError(f"cannot write the report: {e.strerror}", where=output) from None


def _run_writer(
    name: str,
    directory: str,
    manifest: str | None,
    no_cache: bool,
    cache_dir: str | None,
    jobs: int | None,
    verbose: bool,
) -> int:
    from gate import checks, init_lock, reporters

    target = checks.Target.resolve(directory, manifest)
    settings = _settings(cache_dir, verbose=verbose)
    with _scanner(no_cache, settings, jobs) as scanner:
        run = init_lock.init if name == "init" else init_lock.lock
        outcome = run(target, scanner, settings)
    for line in outcome.changes:
        click.echo(line)
    for line in outcome.warnings:
        click.echo(f"warning: {line}", err=True)
    if outcome.report.findings:
        text = reporters.get("text", reporters.ReporterOptions(color=sys.stderr.isatty())).render(
            outcome.report
        )
        click.echo(text, nl=False, err=True)
    for path in outcome.written:
        click.echo(f"wrote {path}")
    if outcome.report.manifest_invalid:
        return int(ExitCode.USAGE)
    if not outcome.written and not outcome.report.findings:
        click.echo("up to date")
    return int(ExitCode.FAILED) if outcome.report.findings else int(ExitCode.PASS)


@cli.command()
@_dir_arg
def init(directory: str, manifest: str | None, **scan: Any) -> int:
    """Scaffold DIR/provenance.yaml from its weight files and model card, then lock it.

    On an existing manifest, adds weight files not yet declared and keeps everything else.
    """
    return _run_writer("init", directory, manifest, **scan)


@cli.command()
@_dir_arg
def lock(directory: str, manifest: str | None, **scan: Any) -> int:
    """Record or refresh sizes and digests of the declared artifacts, and the lock file."""
    return _run_writer("lock", directory, manifest, **scan)


@contextlib.contextmanager
def _scanner(no_cache: bool, settings: Settings, jobs: int | None) -> Iterator[Scanner]:
    from gate.cache import StatCache
    from gate.scanner import Scanner

    verbose = settings.verbose
    cache = None if no_cache else StatCache(settings.cache_dir)
    progress = ProgressBar(sys.stderr) if sys.stderr.isatty() else None
    scanner = Scanner(cache=cache, workers=jobs, progress=progress)
    try:
        yield scanner
    finally:
        if cache is not None:
            cache.close()
        if verbose:
            click.echo(
                f"provenance-gate: {scanner.files_hashed} file(s) read"
                f" ({scanner.bytes_hashed / 1e6:.1f} MB), {scanner.files_cached} unchanged"
                " file(s) taken from the stat cache",
                err=True,
            )


class CountBar:
    """Models done, rate and ETA on a terminal (`audit`), one redraw per model; cleared at the
    end so the summary line stands alone."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.started = time.monotonic()

    def __call__(self, done: int, total: int) -> None:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        rate = done / elapsed
        eta = (total - done) / rate if rate else 0.0
        bar = "#" * int(24 * done / total) if total else ""
        line = f"\rauditing [{bar:<24}] {done}/{total} models  {rate:.2f}/s  ETA {eta:.0f}s\x1b[K"
        self.stream.write("\r\x1b[K" if done >= total else line)
        self.stream.flush()


class ProgressBar:
    """Bytes, throughput and ETA on a terminal, redrawn at most ten times a second."""

    MIN_BYTES = 256 << 20  # smaller jobs finish before a bar is worth drawing

    def __init__(self, stream: TextIO, min_bytes: int = MIN_BYTES) -> None:
        self.stream = stream
        self.min_bytes = min_bytes
        self.lock = threading.Lock()
        self.total = self.done = self.files = 0
        self.active = False
        self.started = self.drawn_at = 0.0
        self.visible = False

    def start(self, total_bytes: int, files: int) -> None:
        self.total, self.done, self.files = total_bytes, 0, files
        self.started = self.drawn_at = time.monotonic()
        self.active = total_bytes >= self.min_bytes

    def advance(self, n: int) -> None:
        with self.lock:
            self.done += n
            now = time.monotonic()
            if self.active and now - self.drawn_at >= 0.1:
                self.drawn_at = now
                self._draw(now)

    def _draw(self, now: float) -> None:
        elapsed = max(now - self.started, 1e-9)
        rate = self.done / elapsed
        share = self.done / self.total if self.total else 1.0
        eta = (self.total - self.done) / rate if rate else 0.0
        bar = "#" * int(share * 24)
        self.stream.write(
            f"\rhashing {self.files} file(s) [{bar:<24}] {self.done / 1e9:.2f}/"
            f"{self.total / 1e9:.2f} GB  {rate / 1e9:.2f} GB/s  ETA {eta:.0f}s\x1b[K"
        )
        self.stream.flush()
        self.visible = True

    def finish(self) -> None:
        with self.lock:
            if self.visible:
                self.stream.write("\r\x1b[K")
                self.stream.flush()
                self.visible = False


class _LineGuard(io.RawIOBase):
    """A binary stream that passes whole lines on with workflow commands neutralised
    (text.no_commands): whatever prints to the step's output while the gate runs (a message
    naming a file, a library's warning quoting a model card) cannot command the CI runner."""

    def __init__(self, inner: BinaryIO) -> None:
        self.inner = inner
        self.pending = b""

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return self.inner.isatty()

    def fileno(self) -> int:
        return self.inner.fileno()

    def write(self, b: Any) -> int:
        data = bytes(b)
        self.pending += data
        if b"\n" in self.pending:
            done, _, self.pending = self.pending.rpartition(b"\n")
            self._out(done + b"\n")
        return len(data)

    def flush(self) -> None:
        if self.pending:  # a partial line (a progress bar): neutralised as it stands
            self._out(self.pending)
            self.pending = b""
        self.inner.flush()

    def _out(self, data: bytes) -> None:
        text = data.decode("utf-8", "surrogateescape")
        self.inner.write(no_commands(text).encode("utf-8", "surrogateescape"))


class _Guard:
    raw: TextIO | None = None  # the real standard output while guarded (for annotations)


_GUARD = _Guard()


@contextlib.contextmanager
def _guarded_output() -> Iterator[None]:
    """Standard output and error through _LineGuard; library warnings silenced unless
    PROVENANCE_GATE_DEBUG is set (they may quote attacker text and say nothing to users)."""
    saved = sys.stdout, sys.stderr
    wrapped: list[Any] = []
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        buffer = getattr(stream, "buffer", None)
        if buffer is None:
            continue
        stream.flush()
        wrapper: Any = io.TextIOWrapper(
            _LineGuard(buffer),
            encoding="utf-8",
            errors="backslashreplace",
            line_buffering=True,
            write_through=True,
        )
        wrapped.append(wrapper)
        setattr(sys, name, wrapper)
    _GUARD.raw = saved[0]
    try:
        with warnings.catch_warnings():
            if not os.environ.get("PROVENANCE_GATE_DEBUG"):
                warnings.simplefilter("ignore")
            yield
    finally:
        for done in wrapped:
            with contextlib.suppress(Exception):
                done.flush()
                done.detach()
        sys.stdout, sys.stderr = saved
        _GUARD.raw = None


def main(argv: list[str] | None = None) -> int:
    """Entry point: output guarded (see _guarded_output), then run."""
    with _guarded_output():
        return _main(argv)


def _main(argv: list[str] | None) -> int:
    """The one place that turns errors into messages and exit codes."""
    try:
        rv = cli.main(args=argv, prog_name="provenance-gate", standalone_mode=False)
    except GateError as e:
        click.echo(f"provenance-gate: error: {visible(str(e))}", err=True)
        if e.hint:
            click.echo(f"  hint: {visible(e.hint)}", err=True)
        return int(e.exit_code)
    except click.exceptions.Abort:
        click.echo("provenance-gate: interrupted", err=True)
        return int(ExitCode.INTERRUPTED)
    except click.ClickException as e:
        e.show()
        return int(ExitCode.USAGE)
    except KeyboardInterrupt:
        click.echo("provenance-gate: interrupted", err=True)
        return int(ExitCode.INTERRUPTED)
    except Exception as e:  # a bug: say so, with enough to file an issue, but no traceback
        click.echo(
            f"provenance-gate: internal error: {type(e).__name__}: {visible(str(e))}", err=True
        )
        click.echo(
            "  hint: this is a bug in provenance-gate; please report it"
            " (PROVENANCE_GATE_DEBUG=1 shows the traceback)",
            err=True,
        )
        if os.environ.get("PROVENANCE_GATE_DEBUG"):
            raise
        return int(ExitCode.CRASH)
    if isinstance(rv, int):
        return rv
    return int(ExitCode.PASS)
