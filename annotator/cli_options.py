"""What the ``annotator`` command groups share: the --config and --home options, the
configuration loader, and the group that turns every error a user can act on into one line and
a non-zero exit (never a traceback)."""

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

MANIFEST_OPTION = click.option(
    "--manifest", required=True, help="Training manifest (JSON Lines): a file or an s3:// URI."
)
# A bundle named as models.bundle names one (annotator/models/locate.py).
BUNDLE_METAVAR = "BUNDLE"
BUNDLE_HELP = "a bundle directory, an s3:// URI, registry:NAME or small:<part>"


def _load(config_path: Path | None, **overrides) -> AnnotatorConfig:
    try:
        return load_config(config_path, **overrides)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


def user_errors() -> tuple[type[Exception], ...]:
    """The errors that name something the user gave (a path, a URI, a config field, a bundle, a
    manifest): shown as one line, exit status 1. Anything else is a bug and keeps its traceback."""
    from annotator.audio.decode import AudioError
    from annotator.kinds import UnknownKind
    from annotator.models.bundle import BundleError
    from annotator.models.profiles import ProfileError
    from annotator.models.prompt import PromptError
    from annotator.output.tables import OutputError
    from annotator.pipeline.pools import PoolError
    from annotator.pipeline.run import RunError
    from annotator.query.duckdb import QueryError
    from annotator.review.labelstudio import ReviewError
    from annotator.storage import StorageError
    from training.data import ManifestError
    from training.llm import ExportError

    return (
        AudioError,
        BundleError,
        ConfigError,
        ExportError,
        ManifestError,
        OutputError,
        PoolError,
        ProfileError,
        PromptError,
        QueryError,
        ReviewError,
        RunError,
        StorageError,
        UnknownKind,
    )


class Group(click.Group):
    """A command group whose commands' user errors (:func:`user_errors`) end as one clean line."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except click.ClickException:
            raise
        except Exception as exc:
            if isinstance(exc, user_errors()):
                raise click.ClickException(str(exc)) from None
            raise


def kind_trainer(command: str, display: str):
    """An ``annotator train <command>`` for one bundle kind (its ``cli.TRAIN_COMMANDS``):
    --manifest, --from (the kind's untrained small-profile bundle by default), --out, --name,
    --push/--promote and --config."""

    def decorate(func):
        from annotator.cli_bundles import PUSH_OPTIONS

        for option in reversed(
            [
                click.command(command),
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
