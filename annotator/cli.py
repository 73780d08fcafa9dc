"""The ``annotator`` command line. Each command is a thin layer over the library."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from annotator import __version__
from annotator.cli_bundles import bundles, publish, push_options
from annotator.cli_options import CONFIG_OPTION, HOME_OPTION, MANIFEST_OPTION, Group, _load
from annotator.cli_review import review
from annotator.cli_train import train


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="annotator")
def main() -> None:
    """Label large audio archives with transcripts and emotions, query them with SQL."""


@main.group()
def models() -> None:
    """Build and inspect model profiles and bundles."""


@models.command("init")
@click.option(
    "--profile",
    type=click.Choice(["small", "paper-random"]),
    default="small",
    show_default=True,
    help="Profile to build. `small`: tiny models for CPU, tests and the demo. `paper-random`: "
    "the paper models' architectures, sizes and token layouts with random weights (~19 GB, "
    "built where it runs; never by the tests). `paper` models load by name on a cluster.",
)
@HOME_OPTION
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random parts.")
@click.option(
    "--force",
    is_flag=True,
    help="small: rebuild even if an intact build exists (paper-random always rebuilds the parts named).",
)
@click.option(
    "--parts",
    default="text_encoder,hubert,whisper,llm,bundle",
    show_default=True,
    help="paper-random only: which parts to build (comma-separated); `bundle` is an untrained "
    "bundle of the default kind over text_encoder, hubert and llm.",
)
@CONFIG_OPTION
def models_init(
    profile: str,
    home: Path | None,
    seed: int,
    force: bool,
    parts: str,
    config_path: Path | None,
) -> None:
    """Build a profile offline and deterministically (same seed, same bytes)."""
    from rich.console import Console

    from annotator.models.profiles import ProfileError, build_small_profile

    console = Console(stderr=True)
    home = home or _load(config_path).models.home
    try:
        with console.status("building the small profile") as status:
            root = build_small_profile(
                home,
                seed=seed,
                force=force and profile == "small",
                on_step=lambda step: status.update(f"small profile: {step}"),
            )
        if profile == "paper-random":
            from annotator.models.paper_shapes import (
                PARTS,
                build_paper_random_profile,
                format_parameter_table,
                parameter_table,
            )

            wanted = tuple(p.strip() for p in parts.split(",") if p.strip())
            unknown = sorted(set(wanted) - set(PARTS))
            if unknown:
                raise click.BadParameter(
                    f"unknown part(s) {', '.join(unknown)}; parts: {', '.join(PARTS)}",
                    param_hint="--parts",
                )
            click.echo(format_parameter_table(parameter_table()), err=True)
            with console.status("building paper-random") as status:
                root = build_paper_random_profile(
                    home,
                    small_whisper=root / "whisper",
                    seed=seed,
                    parts=wanted,
                    on_step=lambda step: status.update(f"paper-random: {step}"),
                )
    except ProfileError as exc:
        raise click.ClickException(str(exc)) from None
    console.print(f"{profile} profile ready at {root}")
    _print_profile(root)


@models.command("push")
@click.argument("dest")
@click.option(
    "--profile",
    type=click.Choice(["small", "paper-random"]),
    default="small",
    show_default=True,
    help="The built profile to upload, each part to DEST/<profile>/<part>.",
)
@click.option(
    "--dir",
    "directory",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="Upload this one model directory to DEST itself instead (a hub snapshot, say).",
)
@HOME_OPTION
@CONFIG_OPTION
def models_push(
    dest: str, profile: str, directory: Path | None, home: Path | None, config_path: Path | None
) -> None:
    """Upload models to object storage (DEST, e.g. s3://bucket/models) for nodes that do not
    share this disk; each tree carries its files' SHA-256, checked by every node that fetches it.

    \b
      annotator models push s3://bucket/models            # then models.store: s3://bucket/models
      annotator models push s3://bucket/models/qwen --dir ./Qwen2.5-7B-Instruct
    """
    from annotator.models.profiles import push_profile
    from annotator.storage import upload_tree

    config = _load(config_path)
    if directory is not None:
        manifest = upload_tree(directory, dest, config.s3)
        click.echo(f"{directory} → {dest} ({len(manifest['files'])} files)")
        return
    pushed = push_profile(
        home or config.models.home,
        profile,
        dest,
        config.s3,
        on_part=lambda part: click.echo(f"  {profile}:{part}", err=True),
    )
    click.echo(f"{len(pushed)} parts of {profile} → {dest} (set models.store: {dest})")


@models.command("show")
@HOME_OPTION
@CONFIG_OPTION
def models_show(home: Path | None, config_path: Path | None) -> None:
    """Verify the built small profile and list its files with their SHA-256."""
    from annotator.models.profiles import ProfileError, small_dir, verify_profile

    root = small_dir(home or _load(config_path).models.home)
    try:
        verify_profile(root)
    except ProfileError as exc:
        raise click.ClickException(str(exc)) from None
    _print_profile(root)


def _print_profile(root: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    from annotator.models.profiles import PROFILE_MANIFEST

    manifest = json.loads((root / PROFILE_MANIFEST).read_text())
    table = Table(
        "file", "bytes", "sha256", title=f"{manifest['profile']} profile (seed {manifest['seed']})"
    )
    for name, digest in manifest["files"].items():
        table.add_row(name, f"{(root / name).stat().st_size:,}", digest[:16])
    Console().print(table)


@main.command("annotate")
@click.argument("sources", nargs=-1, required=True)
@click.option(
    "--out",
    "output",
    default=None,
    help="Output directory or s3:// prefix (Delta tables segments/, errors/, files/, runs/).",
)
@click.option(
    "--address",
    default=None,
    help="Ray cluster: `auto`, `ray://host:10001` or host:port; default a local cluster.",
)
@click.option(
    "--force",
    is_flag=True,
    help="Reprocess files the output already holds; their new rows supersede the old.",
)
@click.option(
    "--retry-errors",
    is_flag=True,
    help="Reprocess the files committed with errors (quarantined); the others stay done.",
)
@CONFIG_OPTION
def annotate_command(
    sources: tuple[str, ...],
    output: str | None,
    address: str | None,
    force: bool,
    retry_errors: bool,
    config_path: Path | None,
) -> None:
    """Transcribe and label the emotions of SOURCES (files, directories, globs, tar/zip, s3://).

    Each file is committed once: rerunning the same command after a crash skips what is done and
    finishes the rest. Whatever one file raises quarantines that file in the errors table and
    the run goes on; a file a transient error (throttling, network, credentials) kept from being
    done is done by the next run. Exit status 0 when every input was annotated, quarantined or
    left for the next run; non-zero, before any work, for a missing source, an unwritable output
    or a model that is not there, and when no work arrives for `run.stall_timeout_s`. Finished
    files are committed together every `commit.every_s` seconds (default 30).

    \b
      annotator annotate calls/ podcasts.tar --out out/
      annotator annotate 's3://archive/2026-11-21/*.wav' --out s3://bucket/annotations --address auto
    """
    import logging

    from annotator.pipeline.progress import Progress
    from annotator.pipeline.run import RunError, annotate

    config = _load(config_path, output=output, ray_address=address)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    progress = Progress()
    try:
        summary = annotate(
            config, sources, force=force, on_progress=progress, retry_errors=retry_errors
        )
    except RunError as exc:
        progress.close()
        raise click.ClickException(str(exc)) from None
    progress.close()
    for line in summary.lines():
        click.echo(line)


@main.command("eval")
@click.argument("bundle")
@MANIFEST_OPTION
@click.option("--split", default="test", show_default=True, help="Which split to score.")
@click.option("--out", "dest", type=click.Path(file_okay=False, path_type=Path), default=None)
@click.option(
    "--ablate",
    type=click.Choice(["audio", "text"]),
    default=None,
    help="Take one input away: audio (silence of the same length) or text (blank transcripts).",
)
@CONFIG_OPTION
def eval_command(
    bundle: str,
    manifest: str,
    split: str,
    dest: Path | None,
    ablate: str | None,
    config_path: Path | None,
) -> None:
    """Score BUNDLE (a directory, s3:// URI, registry:NAME or small:<part>) on a manifest split
    as it is served (vLLM): WA, UA, WF1, confusion matrix.

    The models run in a Ray actor (on a GPU when train.use_gpu or the label stage asks for one);
    this process only writes the result."""
    from training.data import read_manifest
    from training.evaluate import evaluate_on_ray

    config = _load(config_path)
    examples = [e for e in read_manifest(manifest, s3=config.s3) if e.split == split]
    if not examples:
        raise click.ClickException(f"{manifest} has no {split!r} examples")
    result = evaluate_on_ray(config, bundle, examples, dest, ablate)
    click.echo(
        f"{len(examples)} examples: WA {result['wa']:.3f} · UA {result['ua']:.3f} · "
        f"WF1 {result['wf1']:.3f} · ECE {result['ece']:.3f}"
        + (f" · written to {dest}" if dest else "")
    )


@main.command("calibrate")
@click.argument("bundle")
@MANIFEST_OPTION
@click.option("--fit-split", default="dev", show_default=True, help="Split T is fitted on.")
@click.option(
    "--check-split",
    default="test",
    show_default=True,
    help="Split the fit is measured on ('' for none: the figures then only show the fit).",
)
@click.option("--out", "dest", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--report",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Directory for calibration.json and reliability.png.",
)
@click.option(
    "--coverage",
    type=click.FloatRange(0, 1, min_open=True),
    default=None,
    help="Also abstain: the bundle writes 'unsure' under the confidence that labels this share.",
)
@push_options
@CONFIG_OPTION
def calibrate_command(
    bundle: str,
    manifest: str,
    fit_split: str,
    check_split: str,
    dest: Path,
    report: Path | None,
    coverage: float | None,
    push: bool,
    promote: str | None,
    config_path: Path | None,
) -> None:
    """Fit BUNDLE's posterior temperature and write the calibrated bundle to --out.

    Both splits are scored as served. The calibrated bundle has the same weights and labels (T
    never changes which emotion is chosen) and a new version; serve it with models.bundle."""
    from annotator.models.bundle import BundleError
    from training.calibrate import calibrate
    from training.data import read_manifest

    config = _load(config_path)
    examples = read_manifest(manifest, s3=config.s3)
    fit = [e for e in examples if e.split == fit_split]
    check = [e for e in examples if check_split and e.split == check_split]
    if not fit:
        raise click.ClickException(f"{manifest} has no {fit_split!r} examples to fit on")
    try:
        figures = calibrate(config, bundle, fit, check, dest, report, coverage=coverage)
    except BundleError as exc:
        raise click.ClickException(str(exc)) from None
    shown = "check" if check else "fit"
    f = figures[shown]
    click.echo(
        f"T {figures['temperature']:.3f} fitted on {figures['fit']['examples']} {fit_split} "
        f"examples; on {f['examples']} {check_split if check else fit_split} examples ECE "
        f"{f['ece_before']:.3f} -> {f['ece_after']:.3f}, NLL {f['nll_before']:.3f} -> "
        f"{f['nll_after']:.3f}; bundle {figures['calibrated_bundle']} written to {dest}"
    )
    for row in f["coverage_after"]:
        accuracy = "-" if row["accuracy"] is None else f"{row['accuracy']:.3f}"
        click.echo(
            f"  confidence >= {row['threshold']:.2f}: coverage {row['coverage']:.3f}, "
            f"accuracy {accuracy}"
        )
    if coverage is not None:
        click.echo(
            f"unsure below {figures['unsure_below']:.3f}: coverage "
            f"{figures['coverage']['coverage']:.3f} on the {check_split or fit_split} split"
        )
    publish(config, dest, push, promote)


@main.command("report")
@click.argument("output")
@click.option(
    "--html",
    "dest",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="HTML file.",
)
@click.option("--run", "run_id", default=None, help="Only this run's rows (default: everything).")
@click.option(
    "--call",
    "calls",
    multiple=True,
    metavar="CALL_ID",
    help="Draw this call's timeline (repeatable; call_id as in the segments view).",
)
@click.option(
    "--max-calls",
    type=click.IntRange(min=0),
    default=20,
    show_default=True,
    help="Without --call: timelines of this many most recently processed calls.",
)
@CONFIG_OPTION
def report_command(
    output: str,
    dest: Path,
    run_id: str | None,
    calls: tuple[str, ...],
    max_calls: int,
    config_path: Path | None,
) -> None:
    """Write a self-contained HTML report of OUTPUT: totals, timelines of chosen calls, emotion
    shares, confidence, errors. Aggregates come from SQL, so any size of output makes a small page.
    """
    from annotator.query import QueryError
    from annotator.report.html import write_report

    try:
        write_report(output, dest, _load(config_path).s3, run_id, calls, max_calls)
    except QueryError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"report written to {dest}")


@main.command("compact")
@click.argument("output")
@click.option(
    "--retain-hours",
    type=click.IntRange(min=1),
    default=168,
    show_default=True,
    help="Keep files unreferenced for less than this (time travel reaches this far back; a "
    "concurrent writer's uncommitted files are younger).",
)
@click.option("--target-mib", type=click.IntRange(min=1), default=None, help="Target file size.")
@CONFIG_OPTION
def compact_command(
    output: str, retain_hours: int, target_mib: int | None, config_path: Path | None
) -> None:
    """Merge OUTPUT's many small commits into a few large files, then remove unneeded files.

    Safe while a run writes into OUTPUT: rows are neither lost nor duplicated. Run it after the
    night's runs (or from cron); queries over a compacted output read a few files.
    """
    from annotator.output.compact import compact
    from annotator.output.tables import OutputError

    try:
        done = compact(output, _load(config_path).s3, retain_hours, target_mib)
    except OutputError as exc:
        raise click.ClickException(str(exc)) from None
    for c in done:
        click.echo(f"{c.table}: {c.files_before} → {c.files_after} files, {c.removed} removed")


@main.command("convert")
@click.argument("output")
@CONFIG_OPTION
def convert_command(output: str, config_path: Path | None) -> None:
    """Convert OUTPUT from annotator 0.1's layout (a Parquet file and a marker per input file)
    into Delta tables, in place. Interrupted, it resumes where it stopped when run again."""
    from annotator.output.legacy import convert

    counts = convert(
        output,
        _load(config_path).s3,
        on_progress=lambda done, total: click.echo(f"  {done}/{total} files", err=True),
    )
    click.echo(
        f"converted {counts['files']} files ({counts['segments']} segments, "
        f"{counts['errors']} errors, {counts['runs']} runs); removed {counts['removed']} old objects"
    )


@main.command("demo")
@HOME_OPTION
def demo_command(home: Path | None) -> None:
    """The whole product offline on the CPU: synthetic archive, training, annotate, SQL, report."""
    from annotator.demo import run_demo

    run_demo(home, say=click.echo)


@main.command("query")
@click.argument("output")
@click.argument("sql", required=False)
@click.option(
    "--name", "name", default=None, help="Run a named query from sql/queries/ instead of SQL."
)
@click.option(
    "--param",
    "params",
    multiple=True,
    metavar="K=V",
    help="Parameter of a named query (repeatable).",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "csv", "json", "parquet"]),
    default="table",
    show_default=True,
    help="Output format; parquet needs --output.",
)
@click.option(
    "--output",
    "dest",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the result to this file instead of standard output.",
)
@click.option(
    "--list", "list_queries", is_flag=True, help="List the named queries and their parameters."
)
@click.option("--shell", is_flag=True, help="Interactive SQL session with the views loaded.")
@click.option(
    "--limit",
    type=click.IntRange(min=0),
    default=100,
    show_default=True,
    help="Rows the table format prints (0: all); csv, json and parquet always write every row, "
    "streamed.",
)
@click.option(
    "--as-of",
    "as_of",
    type=click.DateTime(["%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S", "%Y-%m-%d"]),
    default=None,
    help="Query the output as it was at this time (UTC), e.g. the labels before a --force rerun.",
)
@CONFIG_OPTION
def query(
    output: str,
    sql: str | None,
    name: str | None,
    params: tuple[str, ...],
    fmt: str,
    dest: Path | None,
    list_queries: bool,
    shell: bool,
    limit: int,
    as_of,
    config_path: Path | None,
) -> None:
    """Ask SQL questions of an annotator OUTPUT (local path or s3://), read-only.

    Views: segments, errors, files, runs, recordings, turns. Examples:

    \b
      annotator query out/ "SELECT emotion, count(*) FROM segments GROUP BY 1"
      annotator query out/ --name angriest_call_endings --param label=angry --param last_s=300
      annotator query s3://bucket/annotations --name unsure_segments --format csv
    """
    from annotator.query import cli as query_cli

    config = _load(config_path)
    if as_of is not None:
        from datetime import UTC

        as_of = as_of.replace(tzinfo=UTC)
    query_cli.run(
        output, sql, name, params, fmt, dest, list_queries, shell, config.s3, as_of, limit
    )


@main.command("config")
@CONFIG_OPTION
def show_config(config_path: Path | None) -> None:
    """Print the resolved configuration (profile defaults + YAML + environment) as YAML."""
    import yaml

    config = _load(config_path)
    click.echo(yaml.safe_dump(json.loads(config.model_dump_json()), sort_keys=False), nl=False)


@models.group("import")
def models_import() -> None:
    """Write a bundle from a published checkpoint of a kind that needs no training."""


def _add_kind_imports() -> None:
    from annotator.kinds import KINDS

    for declared in KINDS.values():
        if declared.has_part("cli"):
            for command in getattr(declared.part("cli"), "IMPORT_COMMANDS", ()):
                models_import.add_command(command)


_add_kind_imports()
main.add_command(train)
main.add_command(review)
main.add_command(bundles)

if __name__ == "__main__":
    sys.exit(main())
