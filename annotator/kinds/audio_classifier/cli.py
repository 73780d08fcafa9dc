"""``annotator models import audio-classifier``: a bundle over a published audio-classification
checkpoint; ``annotator train audio-classifier``: fine-tune one on Ray Train
(annotator/kinds/audio_classifier/train.py)."""

from __future__ import annotations

from pathlib import Path

import click

from annotator.cli_options import CONFIG_OPTION, _load, kind_trainer


@click.command("audio-classifier")
@click.argument("name_or_path", metavar="NAME_OR_PATH")
@click.option(
    "--out",
    "dest",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory to write the bundle to (new or empty).",
)
@click.option(
    "--labels",
    "labels_map",
    default=None,
    metavar="MAP",
    help="Checkpoint label → our label, e.g. 'neu=neutral,ang=angry,sad=sad,hap=happy,"
    "exc=happy'; several may map to one of ours, checkpoint labels not named are dropped and the "
    "rest renormalised. Default: matched by name and by IEMOCAP abbreviation (neu, ang, sad, hap).",
)
@click.option(
    "--label-set",
    default=None,
    help="Our label set to map onto (iemocap4, meld7, meld4). Default: the one whose labels "
    "the mapping's are, or (no --labels) whose labels all get a match.",
)
@click.option(
    "--top-layers",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Encoder layers below the head that `review retrain` fine-tunes with it (0: the head "
    "alone).",
)
@CONFIG_OPTION
def import_audio_classifier_command(
    name_or_path: str,
    dest: Path,
    labels_map: str | None,
    label_set: str | None,
    top_layers: int,
    config_path: Path | None,
) -> None:
    """Write a bundle serving the AutoModelForAudioClassification checkpoint NAME_OR_PATH
    (small:audio-classifier, a directory, an s3:// URI, or a hub name where the cluster reaches
    the hub), its labels (config.id2label) mapped onto one of our label sets. Its weights stay
    where they are: the bundle names them."""
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_AUDIO_CLASSIFICATION_MAPPING_NAMES,
    )

    from annotator.kinds.audio_classifier.model import (
        LabelMapError,
        Tuning,
        checkpoint_labels,
        resolve_mapping,
        write_audio_classifier_bundle,
    )
    from annotator.models.locate import local_model
    from annotator.storage import is_remote

    config = _load(config_path)
    local = local_model(name_or_path, config)  # fetched when in object storage
    try:
        checkpoint = AutoConfig.from_pretrained(local)
    except (OSError, ValueError) as exc:
        raise click.ClickException(
            f"{name_or_path} is not a transformers checkpoint: {exc}"
        ) from None
    if checkpoint.model_type not in MODEL_FOR_AUDIO_CLASSIFICATION_MAPPING_NAMES:
        raise click.ClickException(
            f"{name_or_path} is a {checkpoint.model_type} checkpoint, which "
            "AutoModelForAudioClassification does not load"
        )
    heads = checkpoint.architectures or []
    if heads and not any(
        a.endswith(("ForSequenceClassification", "ForAudioClassification")) for a in heads
    ):
        raise click.ClickException(
            f"{name_or_path} is a {', '.join(heads)} checkpoint, with no classification head"
        )
    if Path(local).is_dir() and not any(Path(local).glob("*.safetensors")):
        raise click.ClickException(
            f"{name_or_path} holds no safetensors weights (annotator loads no pickled ones): "
            "convert it with save_pretrained(..., safe_serialization=True)"
        )
    try:
        label_map = resolve_mapping(checkpoint_labels(checkpoint), labels_map, label_set)
    except LabelMapError as exc:
        hint = "'--labels'" if labels_map else "'--label-set'" if label_set else "NAME_OR_PATH"
        raise click.BadParameter(str(exc), param_hint=hint) from None
    depth = getattr(checkpoint, "num_hidden_layers", None)
    if depth is not None and top_layers > depth:
        raise click.BadParameter(
            f"{top_layers}: the checkpoint's encoder has {depth} layers",
            param_hint="'--top-layers'",
        )
    # As the config names models: a local directory by its absolute path, the rest as given.
    named = name_or_path
    if not is_remote(name_or_path) and Path(name_or_path).is_dir():
        named = str(Path(name_or_path).resolve())
    bundle = write_audio_classifier_bundle(
        dest,
        named,
        label_map,
        Tuning(top_layers=top_layers),
        extra={"trained": False, "imported_from": named},
    )
    click.echo(f"bundle {bundle.version} written to {bundle.root}")
    click.echo(f"labels ({label_map.label_set}): {label_map.describe()}")


@kind_trainer("audio-classifier", "audio-classifier")
@click.option(
    "--top-layers",
    type=click.IntRange(min=0),
    default=None,
    help="Encoder layers below the head to fine-tune with it (default: what the bundle says).",
)
def train_audio_classifier_command(
    manifest: str,
    start: str,
    dest: Path,
    name: str,
    push: bool,
    promote: str | None,
    config_path: Path | None,
    top_layers: int | None,
) -> None:
    """Fine-tune an audio-classifier bundle's head (and --top-layers encoder layers) on Ray
    Train, on stage 2's schedule; exports a bundle over the same checkpoint to --out."""
    from annotator.cli_bundles import publish
    from annotator.kinds.audio_classifier.train import train_audio_classifier

    config = _load(config_path)
    bundle = train_audio_classifier(config, manifest, start, dest, name, top_layers)
    accuracy = bundle.extra.get("train_accuracy")
    click.echo(
        f"bundle {bundle.version} written to {bundle.root}"
        + (f" (training accuracy, last epoch: {accuracy:.3f})" if accuracy is not None else "")
    )
    publish(config, bundle.root, push, promote)


TRAIN_COMMANDS = [train_audio_classifier_command]
IMPORT_COMMANDS = [import_audio_classifier_command]
