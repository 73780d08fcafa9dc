"""``annotator train``: manifests, and each bundle kind's trainers (its ``cli.TRAIN_COMMANDS``,
annotator/kinds/plugin.py)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import click

from annotator.cli_options import CONFIG_OPTION, _load


@click.group()
def train() -> None:
    """Train emotion models on Ray Train: write a manifest, then train a bundle of any kind."""


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
    try:
        if kind == "synthetic":
            made = data.read_manifest(synthetic_corpora.synthetic_corpus(Path(source)))
        elif kind == "iemocap":
            made = data.iemocap_manifest(Path(source), test_session)
        elif kind == "meld":
            made = data.meld_manifest(Path(source), int(classes))
        else:
            made = data.from_annotations(
                source, where, human_labels, config.s3, config.audio.channel_speakers
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


def _add_kind_commands() -> None:
    from annotator.kinds import KINDS

    for declared in KINDS.values():
        if declared.has_part("cli"):
            for command in declared.part("cli").TRAIN_COMMANDS:
                train.add_command(command)


_add_kind_commands()
