"""`annotator train qieemo`: train a Qieemo bundle on Ray Train (annotator/cli_options.py, ``kind_trainer``)."""

from __future__ import annotations

from pathlib import Path

import click

from annotator.cli_bundles import publish
from annotator.cli_options import _load, kind_trainer


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
    from annotator.kinds.qieemo.train import train_qieemo

    config = _load(config_path)
    bundle = train_qieemo(config, manifest, start, dest, name=name)
    accuracy = bundle.extra.get("train_accuracy")
    click.echo(
        f"bundle {bundle.version} written to {bundle.root}"
        + (f" (training accuracy, last epoch: {accuracy:.3f})" if accuracy is not None else "")
    )
    publish(config, bundle.root, push, promote)


TRAIN_COMMANDS = [train_qieemo_command]
