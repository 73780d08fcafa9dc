"""``annotator bundles``: the bundle registry in object storage (annotator/models/registry.py):
push a trained bundle as an immutable version, move a named pointer to it, list and show."""

from __future__ import annotations

import json
from pathlib import Path

import click

from annotator.cli_options import CONFIG_OPTION, _load

REGISTRY_OPTION = click.option(
    "--registry",
    default=None,
    help="The registry's URI (s3://bucket/bundles, or a directory); default models.registry.",
)


def _registry(registry: str | None, config_path: Path | None):
    from annotator.models.registry import Registry

    config = _load(config_path)
    return Registry(registry or config.models.registry or "", config.s3)


def push_and_promote(registry, bundle_dir: Path, promote: str | None) -> str:
    """Push a bundle and, with ``promote``, point that name at it; says what it did. What the
    training commands' --push/--promote and ``bundles push`` do."""
    version = registry.push(Path(bundle_dir))
    click.echo(f"pushed {version} to {registry.version_uri(version)}")
    if promote:
        pointer = registry.promote(version, promote)
        was = f" (was {pointer['previous']})" if pointer["previous"] else ""
        click.echo(f"{promote} → {version}{was}")
    return version


PUSH_OPTIONS = [
    click.option(
        "--push",
        is_flag=True,
        help="Push the new bundle to the registry (models.registry) as an immutable version.",
    ),
    click.option(
        "--promote",
        metavar="NAME",
        default=None,
        help="Push it and point NAME (e.g. current) at it: serving with "
        "models.bundle registry:NAME takes it from the next run on.",
    ),
]


def push_options(func):
    """--push and --promote on a command that writes a bundle."""
    for option in reversed(PUSH_OPTIONS):
        func = option(func)
    return func


def publish(config, bundle_dir: Path, push: bool, promote: str | None) -> None:
    """What --push/--promote asked for, after a command wrote ``bundle_dir``."""
    from annotator.models.registry import Registry

    if push or promote:
        push_and_promote(Registry(config.models.registry or "", config.s3), bundle_dir, promote)


@click.group()
def bundles() -> None:
    """The bundle registry: immutable versions in object storage and pointers that serving follows."""


@bundles.command("push")
@click.argument("bundle", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--promote", metavar="NAME", default=None, help="Also point NAME at it.")
@REGISTRY_OPTION
@CONFIG_OPTION
def push_command(
    bundle: Path, promote: str | None, registry: str | None, config_path: Path | None
) -> None:
    """Upload BUNDLE as the version its content hash names (nothing if it is there already)."""
    push_and_promote(_registry(registry, config_path), bundle, promote)


@bundles.command("promote")
@click.argument("version")
@click.option("--as", "name", default="current", show_default=True, help="The pointer to move.")
@REGISTRY_OPTION
@CONFIG_OPTION
def promote_command(
    version: str, name: str, registry: str | None, config_path: Path | None
) -> None:
    """Point NAME at VERSION (a version, or another pointer's version), in one atomic write."""
    pointer = _registry(registry, config_path).promote(version, name)
    was = f" (was {pointer['previous']})" if pointer["previous"] else ""
    click.echo(f"{name} → {pointer['version']}{was}")


@bundles.command("list")
@REGISTRY_OPTION
@CONFIG_OPTION
def list_command(registry: str | None, config_path: Path | None) -> None:
    """Every pushed version, newest first, with its kind, labels and the pointers at it."""
    reg = _registry(registry, config_path)
    versions = reg.versions()
    if not versions:
        click.echo(f"no bundles in {reg.uri}")
    for v in versions:
        refs = f"  ← {', '.join(v.refs)}" if v.refs else ""
        click.echo(f"{v.version}  {v.kind:<9} {v.pushed_at}  {','.join(v.labels)}{refs}")


@bundles.command("show")
@click.argument("ref", default="current")
@REGISTRY_OPTION
@CONFIG_OPTION
def show_command(ref: str, registry: str | None, config_path: Path | None) -> None:
    """Print the bundle.json of REF (a pointer or a version) and its URI."""
    reg = _registry(registry, config_path)
    version = reg.resolve(ref)
    click.echo(f"# {reg.version_uri(version)}")
    click.echo(json.dumps(reg.meta(version), indent=2, sort_keys=True))
