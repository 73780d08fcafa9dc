"""Where a model or bundle named in the configuration is, and the local directory a process on
this node opens for it.

One way of naming, everywhere (serving, training, evaluation, the CLI):

* ``small:<part>`` / ``paper-random:<part>``: a part of a built profile, under ``models.home``
  (:func:`annotator.models.profiles.resolve_model`) or, when ``models.store`` is set, under
  ``<store>/<profile>/<part>`` in object storage;
* ``registry:<pointer>`` or ``registry:<version>``: a bundle of the registry at
  ``models.registry`` (:mod:`annotator.models.registry`), resolved to its version's immutable URI;
* ``s3://…``: a tree in object storage;
* anything else: a local path, or a hub name (clusters with hub access).

:func:`locate` says where (no download); :func:`local_model` gives the directory to open on this
node, fetching ``s3://`` trees into the node's cache (:mod:`annotator.models.cache`). The driver
of a run locates, workers fetch: what crosses from the driver to a worker is a name or a URI,
never a path of the driver's disk.
"""

from __future__ import annotations

from annotator.config import AnnotatorConfig, ConfigError, ModelsConfig, S3Config
from annotator.storage import is_remote, join

PROFILES = ("small", "paper-random")


def locate(name: str, models: ModelsConfig, s3: S3Config | None = None) -> str:
    """Where ``name`` lives: a URI, a local path or a hub name (see the module doc)."""
    from annotator.models import registry
    from annotator.models.profiles import resolve_model

    if name.startswith(registry.PREFIX):
        if not models.registry:
            raise ConfigError(
                f"models.bundle {name!r} names the bundle registry, but models.registry is not "
                "set (e.g. s3://bucket/bundles)"
            )
        return registry.Registry(models.registry, s3).location(name)
    profile, sep, part = name.partition(":")
    if sep and profile in PROFILES and part:
        if models.store:
            return join(models.store, profile, part)
        return resolve_model(name, models.home)
    return name


def local_model(name: str, config: AnnotatorConfig) -> str:
    """The local directory (or hub name) a process on this node loads ``name`` from."""
    where = locate(name, config.models, config.s3)
    if is_remote(where):
        from annotator.models.cache import fetch

        return str(fetch(where, config.s3, config.models.cache_dir))
    return where
