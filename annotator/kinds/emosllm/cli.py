"""`annotator train emosllm`: train a EmoSLLM bundle on Ray Train (annotator/cli_options.py, ``kind_trainer``)."""

from __future__ import annotations

from pathlib import Path

import click

from annotator.cli_bundles import publish
from annotator.cli_options import _load, kind_trainer


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
    from annotator.kinds.emosllm.train import train_emosllm

    config = _load(config_path)
    bundle = train_emosllm(config, manifest, start, dest, name=name)
    click.echo(
        f"bundle {bundle.version} written to {bundle.root} "
        f"(last epoch's loss {bundle.extra['loss']:.3f})"
    )
    publish(config, bundle.root, push, promote)


TRAIN_COMMANDS = [train_emosllm_command]
