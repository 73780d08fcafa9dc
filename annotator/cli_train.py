"""``annotator train``: manifests, EmoQ's two stages and cross-validation, and each bundle kind's
trainer."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import click

from annotator.cli_bundles import PUSH_OPTIONS, publish, push_options
from annotator.cli_options import CONFIG_OPTION, MANIFEST_OPTION, _load
from annotator.config import AnnotatorConfig
from training.ablations import ABLATIONS, ablated


@click.group()
def train() -> None:
    """Train emotion models on Ray Train: EmoQ in two stages (EmoQ §2.2–2.4), and each bundle kind."""


@train.command("manifest")
@click.argument("kind", type=click.Choice(["synthetic", "iemocap", "meld", "annotations"]))
@click.argument("source")
@click.option("--out", "dest", required=True, help="The manifest to write: a file or s3:// URI.")
@click.option("--classes", type=click.Choice(["4", "7"]), default="7", help="MELD label set.")
@click.option("--test-session", type=int, default=5, show_default=True, help="IEMOCAP fold.")
@click.option(
    "--where",
    default="emotion_confidence < 0.5",
    show_default=True,
    help="annotations: SQL condition on the segments view.",
)
@click.option(
    "--labels",
    "human_labels",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="annotations: CSV segment_id,label of human labels.",
)
@CONFIG_OPTION
def train_manifest(
    kind: str,
    source: str,
    dest: str,
    classes: str,
    test_session: int,
    where: str,
    human_labels: Path | None,
    config_path: Path | None,
) -> None:
    """Write a training manifest (JSON Lines) from SOURCE.

    \b
      synthetic DIR     speak a synthetic 4-emotion corpus with espeak-ng into DIR
      iemocap ROOT      IEMOCAP release layout, 4 classes, leave-one-session-out
      meld ROOT         MELD official splits, --classes 4|7
      annotations OUT   segments of an annotator output matching --where (+ --labels)
    """
    from training import data, synthetic_corpora

    config = _load(config_path)
    skipped: list[tuple[str, str, int]] = []  # annotations: archive members left out
    try:
        if kind == "synthetic":
            made = data.read_manifest(synthetic_corpora.synthetic_corpus(Path(source)))
        elif kind == "iemocap":
            made = data.iemocap_manifest(Path(source), test_session)
        elif kind == "meld":
            made = data.meld_manifest(Path(source), int(classes))
        else:
            made = data.from_annotations(
                source, where, human_labels, config.s3, config.audio.channel_speakers, skipped
            )
        splits: Counter[str] = Counter()

        def counted(examples):  # annotations stream: count while writing
            for example in examples:
                splits[example.split] += 1
                yield example

        data.write_manifest(counted(made), dest, config.s3)
    except data.ManifestError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{dest}: {sum(splits.values())} examples {dict(sorted(splits.items()))}")
    if skipped:
        click.echo(
            f"skipped {len(skipped)} archive members ({sum(n for *_, n in skipped)} segments): "
            "their audio would need extracting first",
            err=True,
        )
        for uri, member, n in skipped:
            click.echo(f"  {uri}!{member}: {n} segments", err=True)


ABLATION_OPTION = click.option(
    "--ablation",
    type=click.Choice(list(ABLATIONS)),
    default=None,
    help="Train one of the paper's ablations (training/ablations.py) instead of the full model.",
)


def _train_config(config_path: Path | None, ablation: str | None) -> AnnotatorConfig:
    return ablated(_load(config_path), ablation)


@train.command("stage1")
@MANIFEST_OPTION
@click.option("--out", "dest", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--name", default="stage1", show_default=True, help="Run name under train.storage.")
@ABLATION_OPTION
@CONFIG_OPTION
def train_stage1_command(
    manifest: str, dest: Path, name: str, ablation: str | None, config_path: Path | None
) -> None:
    """Stage 1: EmoQ-Former + auxiliary head with MAL; writes the EmoQ-Former to --out."""
    from training.stage1 import train_stage1

    out = train_stage1(_train_config(config_path, ablation), manifest, dest, name=name)
    click.echo(f"stage-1 EmoQ-Former written to {out}")


@train.command("stage2")
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
@push_options
@CONFIG_OPTION
def train_stage2_command(
    manifest: str,
    stage1_dir: str,
    dest: Path,
    name: str,
    ablation: str | None,
    push: bool,
    promote: str | None,
    config_path: Path | None,
) -> None:
    """Stage 2: EmoQ-Former + projector + LoRA with the weighted LM loss; exports a bundle.

    When the manifest has a dev split (MELD's), the exported checkpoint is the epoch with the
    best dev UA, scored each epoch as serving scores."""
    from training.export import export_bundle
    from training.stage2 import train_stage2

    config = _train_config(config_path, ablation)
    checkpoint = train_stage2(config, manifest, stage1_dir, name=name)
    bundle = export_bundle(config, stage1_dir, checkpoint, dest, extra={"manifest": str(manifest)})
    click.echo(f"bundle {bundle.version} written to {bundle.root}")
    publish(config, bundle.root, push, promote)


def kind_trainer(command: str, display: str):
    """An ``annotator train <command>`` for one bundle kind: --manifest, --from (the kind's
    untrained small-profile bundle by default), --out, --name and --config."""

    def decorate(func):
        for option in reversed(
            [
                train.command(command),
                MANIFEST_OPTION,
                click.option(
                    "--from",
                    "start",
                    default=f"small:{command}-bundle",
                    show_default=True,
                    help=f"The {display} bundle to start from (untrained from `models init`, or "
                    "one to fine-tune; a directory, s3:// URI or registry:NAME).",
                ),
                click.option(
                    "--out", "dest", required=True, type=click.Path(file_okay=False, path_type=Path)
                ),
                click.option(
                    "--name",
                    default=command,
                    show_default=True,
                    help="Run name under train.storage.",
                ),
                *PUSH_OPTIONS,
                CONFIG_OPTION,
            ]
        ):
            func = option(func)
        return func

    return decorate


@kind_trainer("qieemo", "Qieemo")
def train_qieemo_command(
    manifest: str,
    start: str,
    dest: Path,
    name: str,
    push: bool,
    promote: str | None,
    config_path: Path | None,
) -> None:
    """Train a Qieemo bundle (audio only: a frozen CTC encoder's layers, fusion, cross-modal
    attention, classifier) on Ray Train, on stage 2's schedule; exports a bundle to --out."""
    from training.qieemo import train_qieemo

    config = _load(config_path)
    bundle = train_qieemo(config, manifest, start, dest, name=name)
    accuracy = bundle.extra.get("train_accuracy")
    click.echo(
        f"bundle {bundle.version} written to {bundle.root}"
        + (f" (training accuracy, last epoch: {accuracy:.3f})" if accuracy is not None else "")
    )
    publish(config, bundle.root, push, promote)


@kind_trainer("mister-e", "MiSTER-E")
def train_mister_e_command(
    manifest: str,
    start: str,
    dest: Path,
    name: str,
    push: bool,
    promote: str | None,
    config_path: Path | None,
) -> None:
    """Train a MiSTER-E bundle on Ray Train: stage 1 the utterance heads on single utterances,
    stage 2 the context model on whole conversations (a source file's turns in time order,
    both channels); exports a bundle to --out."""
    from training.mister_e import train_mister_e

    config = _load(config_path)
    bundle = train_mister_e(config, manifest, start, dest, name=name)
    click.echo(f"bundle {bundle.version} written to {bundle.root}")
    publish(config, bundle.root, push, promote)


@kind_trainer("emosllm", "EmoSLLM")
def train_emosllm_command(
    manifest: str,
    start: str,
    dest: Path,
    name: str,
    push: bool,
    promote: str | None,
    config_path: Path | None,
) -> None:
    """Train an EmoSLLM bundle (a frozen audio encoder's frames pooled into soft tokens before
    the transcript, LoRA LLM) on Ray Train: mapper + LoRA with the weighted LM loss, on stage 2's
    schedule; exports a bundle to --out."""
    from training.emosllm import train_emosllm

    config = _load(config_path)
    bundle = train_emosllm(config, manifest, start, dest, name=name)
    click.echo(
        f"bundle {bundle.version} written to {bundle.root} "
        f"(last epoch's loss {bundle.extra['loss']:.3f})"
    )
    publish(config, bundle.root, push, promote)


@train.command("cv")
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
@CONFIG_OPTION
def train_cv_command(
    kind: str,
    root: Path,
    dest: Path,
    sessions: str,
    classes: str,
    ablation: str | None,
    config_path: Path | None,
) -> None:
    """The paper's protocol as one job: train and score every fold, then mean ± std.

    \b
      iemocap ROOT   five leave-one-session-out folds (IEMOCAP release layout)
      meld ROOT      the official split; stage 2 keeps the checkpoint with the best dev UA

    Writes OUT/<fold>/ (manifest, stage1, bundle, eval/) and OUT/summary.json + confusion.png.
    Rerunning the same command skips finished folds and resumes a fold's training."""
    from training import cv
    from training.data import ManifestError

    config = _train_config(config_path, ablation)
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
