"""`annotator train mister-e`: train a MiSTER-E bundle on Ray Train (annotator/cli_options.py, ``kind_trainer``)."""

from __future__ import annotations

from pathlib import Path

import click

from annotator.cli_bundles import publish
from annotator.cli_options import _load, kind_trainer


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
    from annotator.kinds.mister_e.train import train_mister_e

    config = _load(config_path)
    bundle = train_mister_e(config, manifest, start, dest, name=name)
    click.echo(f"bundle {bundle.version} written to {bundle.root}")
    publish(config, bundle.root, push, promote)


TRAIN_COMMANDS = [train_mister_e_command]
