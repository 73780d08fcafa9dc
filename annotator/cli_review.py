"""``annotator review``: segments out to Label Studio, reviewed labels back as a manifest, and
the served bundle retrained on them."""

from __future__ import annotations

from pathlib import Path

import click

from annotator.cli_bundles import publish, push_options
from annotator.cli_options import CONFIG_OPTION, _load
from annotator.config import ConfigError


@click.group()
def review() -> None:
    """The review loop: unsure segments out to Label Studio, corrected labels back as a manifest."""


def _output_labels(output: str, s3) -> list[str]:
    """The label set the output was served with, read from its rows."""
    from annotator.query import Annotations

    ann = Annotations(output, s3)
    try:
        found = ann.sql(
            "SELECT list_transform(emotion_probs, lambda p: p.label) FROM segments "
            "WHERE len(emotion_probs) > 0 LIMIT 1"
        ).fetchall()
        row = found[0] if found else None
    finally:
        ann.close()
    if row is None:
        raise click.ClickException(f"{output} has no labelled segments")
    return list(row[0])


@review.command("export")
@click.argument("output")
@click.option(
    "--to", "dest", required=True, help="The export folder: a directory or an s3:// prefix."
)
@click.option("--budget", default=200, show_default=True, help="Tasks in all.")
@click.option("--per-label", default=50, show_default=True, help="Tasks per predicted label.")
@click.option(
    "--below", default=1.0, show_default=True, help="Only segments under this confidence."
)
@click.option(
    "--audio-prefix",
    default="",
    help="Put before audio/<id>.wav in each task: where Label Studio serves the folder.",
)
@CONFIG_OPTION
def review_export(
    output: str,
    dest: str,
    budget: int,
    per_label: int,
    below: float,
    audio_prefix: str,
    config_path: Path | None,
) -> None:
    """Write the least confident segments of OUTPUT as Label Studio tasks with their audio.

    The folder gets tasks.json (import it; the model's label is a pre-annotation),
    label_config.xml (the project's labeling interface) and audio/<segment_id>.wav."""
    from annotator.review.export import export_for_review
    from annotator.review.labelstudio import ReviewError

    config = _load(config_path)
    try:
        done = export_for_review(
            output,
            dest,
            _output_labels(output, config.s3),
            budget,
            per_label,
            below,
            config.s3,
            audio_prefix,
            config.audio,
        )
    except ReviewError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{done['tasks']} tasks {done['per_label']} written to {dest}")


@review.command("import")
@click.argument("export")
@click.option("--output", required=True, help="The annotator output the tasks came from.")
@click.option(
    "--manifest", "dest", required=True, help="The manifest to write: a file or an s3:// URI."
)
@click.option(
    "--test-share",
    default=0.2,
    show_default=True,
    type=click.FloatRange(0, 1, max_open=True),
    help="Share of calls held out as the test split (whole calls: never in both).",
)
@CONFIG_OPTION
def review_import(
    export: str, output: str, dest: str, test_share: float, config_path: Path | None
) -> None:
    """Read Label Studio's JSON EXPORT of reviewed tasks and write a training manifest of the
    reviewed segments with their human labels (split by call)."""
    from collections import Counter as Tally

    from annotator.review.labelstudio import ReviewError, read_export
    from training import data

    config = _load(config_path)
    try:
        reviewed = read_export(export, _output_labels(output, config.s3), config.s3)
    except ReviewError as exc:
        raise click.ClickException(str(exc)) from None
    if reviewed.unknown:
        raise click.ClickException(
            f"{export}: labels outside the output's label set: {reviewed.unknown}"
        )
    if not reviewed.labels:
        raise click.ClickException(f"{export}: no task has a label yet")
    splits: Tally[str] = Tally()

    def counted(examples):
        for example in examples:
            splits[example.split] += 1
            yield example

    examples = data.from_annotations(
        output,
        "true",
        reviewed.labels,
        config.s3,
        config.audio.channel_speakers,
        test_share=test_share,
    )
    data.write_manifest(counted(examples), dest, config.s3)
    click.echo(
        f"{dest}: {sum(splits.values())} reviewed segments {dict(sorted(splits.items()))}; "
        f"{reviewed.unlabelled} tasks not labelled yet"
    )
    missing = len(reviewed.labels) - sum(splits.values())
    if missing:
        click.echo(f"{missing} reviewed segments are no longer in {output}", err=True)


@review.command("retrain")
@click.argument("manifest")
@click.option(
    "--bundle",
    "bundle_dir",
    required=True,
    help="The served bundle the reviewed output was labelled with (a directory, s3:// URI or "
    "registry:NAME).",
)
@click.option("--out", "dest", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--name", default="review", show_default=True, help="Run name under train.storage.")
@push_options
@CONFIG_OPTION
def review_retrain(
    manifest: str,
    bundle_dir: str,
    dest: Path,
    name: str,
    push: bool,
    promote: str | None,
    config_path: Path | None,
) -> None:
    """Fine-tune the served bundle on MANIFEST's reviewed train split (stage 2, from the bundle),
    then score old and new on its held-out calls and print the comparison."""
    from training.data import ManifestError
    from training.review import METRICS, retrain_from_review

    config = _load(config_path)
    try:
        scores = retrain_from_review(config, manifest, bundle_dir, dest, name)
    except (ManifestError, ConfigError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"on {scores['examples']} held-out reviewed segments:")
    for which in ("old", "new"):
        s = scores[which]
        click.echo(
            f"  {which} {s['bundle']}: " + " · ".join(f"{m.upper()} {s[m]:.3f}" for m in METRICS)
        )
    click.echo(f"new bundle written to {dest}")
    publish(config, dest, push, promote)
