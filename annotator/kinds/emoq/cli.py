"""`annotator train stage1|stage2|cv`: EmoQ's two training stages (EmoQ §2.2–2.4), the paper's
cross-validation protocol, and the ablations they can train instead."""

from __future__ import annotations

from pathlib import Path

import click

from annotator.cli_bundles import publish, push_options
from annotator.cli_options import CONFIG_OPTION, MANIFEST_OPTION, _load
from annotator.config import AnnotatorConfig
from annotator.kinds.emoq.ablations import ABLATIONS, ablated

ABLATION_OPTION = click.option(
    "--ablation",
    type=click.Choice(list(ABLATIONS)),
    default=None,
    help="Train one of the paper's ablations (annotator/kinds/emoq/ablations.py) instead of the full model.",
)


TRANSCRIPTS_OPTION = click.option(
    "--transcripts",
    type=click.Choice(["reference", "asr", "both"]),
    default=None,
    help="Train on the manifest's reference transcripts, on what the ASR `annotate` runs makes of "
    "each clip (cached beside the manifest), or on both (train.transcripts; default reference).",
)


def _train_config(
    config_path: Path | None, ablation: str | None, transcripts: str | None = None
) -> AnnotatorConfig:
    train = {"transcripts": transcripts} if transcripts else None
    return ablated(_load(config_path, train=train), ablation)


@click.command("stage1")
@MANIFEST_OPTION
@click.option("--out", "dest", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--name", default="stage1", show_default=True, help="Run name under train.storage.")
@ABLATION_OPTION
@TRANSCRIPTS_OPTION
@CONFIG_OPTION
def train_stage1_command(
    manifest: str,
    dest: Path,
    name: str,
    ablation: str | None,
    transcripts: str | None,
    config_path: Path | None,
) -> None:
    """Stage 1: EmoQ-Former + auxiliary head with MAL; writes the EmoQ-Former to --out."""
    from annotator.kinds.emoq.stage1 import train_stage1

    config = _train_config(config_path, ablation, transcripts)
    out = train_stage1(config, manifest, dest, name=name)
    click.echo(f"stage-1 EmoQ-Former written to {out}")


@click.command("stage2")
@MANIFEST_OPTION
@click.option(
    "--stage1",
    "stage1_dir",
    required=True,
    help="Stage 1's EmoQ-Former: the directory `train stage1` wrote, or an s3:// URI.",
)
@click.option("--out", "dest", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--name", default="stage2", show_default=True, help="Run name under train.storage.")
@ABLATION_OPTION
@TRANSCRIPTS_OPTION
@push_options
@CONFIG_OPTION
def train_stage2_command(
    manifest: str,
    stage1_dir: str,
    dest: Path,
    name: str,
    ablation: str | None,
    transcripts: str | None,
    push: bool,
    promote: str | None,
    config_path: Path | None,
) -> None:
    """Stage 2: EmoQ-Former + projector + LoRA with the weighted LM loss; exports a bundle.

    When the manifest has a dev split (MELD's), the exported checkpoint is the epoch with the
    best dev UA, scored each epoch as serving scores."""
    from annotator.kinds.emoq.export import export_bundle
    from annotator.kinds.emoq.stage2 import train_stage2

    config = _train_config(config_path, ablation, transcripts)
    checkpoint = train_stage2(config, manifest, stage1_dir, name=name)
    bundle = export_bundle(config, stage1_dir, checkpoint, dest, extra={"manifest": str(manifest)})
    click.echo(f"bundle {bundle.version} written to {bundle.root}")
    publish(config, bundle.root, push, promote)


@click.command("cv")
@click.argument("kind", type=click.Choice(["iemocap", "meld"]))
@click.argument("root", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", "dest", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--sessions",
    default="1,2,3,4,5",
    show_default=True,
    help="iemocap: the sessions held out, one fold each.",
)
@click.option("--classes", type=click.Choice(["4", "7"]), default="7", help="MELD label set.")
@ABLATION_OPTION
@TRANSCRIPTS_OPTION
@CONFIG_OPTION
def train_cv_command(
    kind: str,
    root: Path,
    dest: Path,
    sessions: str,
    classes: str,
    ablation: str | None,
    transcripts: str | None,
    config_path: Path | None,
) -> None:
    """The paper's protocol as one job: train and score every fold, then mean ± std.

    \b
      iemocap ROOT   five leave-one-session-out folds (IEMOCAP release layout)
      meld ROOT      the official split; stage 2 keeps the checkpoint with the best dev UA

    Writes OUT/<fold>/ (manifest, stage1, bundle, eval/) and OUT/summary.json + confusion.png.
    Rerunning the same command skips finished folds and resumes a fold's training."""
    from annotator.kinds.emoq import cv
    from training.data import ManifestError

    config = _train_config(config_path, ablation, transcripts)
    try:
        if kind == "iemocap":
            held_out = [int(s) for s in sessions.split(",") if s.strip()]
            if not held_out or not set(held_out) <= {1, 2, 3, 4, 5}:
                raise click.BadParameter("sessions are 1..5", param_hint="--sessions")
            folds = cv.iemocap_folds(root, held_out)
        else:
            folds = cv.meld_folds(root, int(classes))
    except ManifestError as exc:
        raise click.ClickException(str(exc)) from None

    def shown(name, result):
        click.echo(
            f"{name}: {result['examples']} test examples · WA {result['wa']:.3f} · "
            f"UA {result['ua']:.3f} · WF1 {result['wf1']:.3f}"
        )

    summary = cv.run_cv(config, folds, dest, on_fold=shown)
    mean, std = summary["mean"], summary["std"]
    click.echo(
        f"{len(summary['folds'])} folds: "
        + " · ".join(f"{m.upper()} {mean[m]:.3f} ± {std[m]:.3f}" for m in cv.METRICS)
        + f" · written to {dest / 'summary.json'}"
    )


TRAIN_COMMANDS = [train_stage1_command, train_stage2_command, train_cv_command]
