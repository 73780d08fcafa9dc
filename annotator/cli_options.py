"""What the ``annotator`` command groups share: the --config and --home options and the
configuration loader that turns a bad configuration into a clean CLI error."""

from __future__ import annotations

from pathlib import Path

import click

from annotator.config import AnnotatorConfig, ConfigError, load_config

CONFIG_OPTION = click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="YAML configuration file (environment variables ANNOTATOR_… override it).",
)
HOME_OPTION = click.option(
    "--home",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Cache directory (default: ANNOTATOR_HOME or ~/.cache/annotator).",
)


def _load(config_path: Path | None, **overrides) -> AnnotatorConfig:
    try:
        return load_config(config_path, **overrides)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
