"""The emotion-model kinds annotate serves, as plugins on one core.

A bundle's ``bundle.json`` names its kind (``kind``; a bundle written before kinds existed is
``emoq``). The kind says which files the bundle must hold, which model stages run after ASR in
the annotate graph (annotator/pipeline/graph.py builds it from them), how a manifest is scored and
a bundle retrained, and what the small profile builds for it (annotator/kinds/plugin.py). Every
output row records it (``bundle_kind``) beside ``bundle_version``. The core (graph, sink,
evaluation, calibration, review, CLI, config) asks this registry and never names a kind.

Adding a kind: a package ``annotator/kinds/<name>/`` and its name in :data:`PLUGINS` (or, from
another distribution, an entry point in the ``annotator.kinds`` group naming its package); the
README's "adding a kind" walks through it.
"""

from __future__ import annotations

import importlib
import importlib.metadata
from dataclasses import replace

from annotator.kinds.plugin import Kind, StageSpec, load_object

# The kinds this distribution ships, each a package of annotator/kinds/, in the order the small
# profile builds them.
PLUGINS = ("emoq", "qieemo", "emosllm", "mister_e", "audio_classifier")

# What a bundle written before kinds existed is, and what output rows of that time hold.
DEFAULT_KIND = "emoq"


def _registered() -> dict[str, Kind]:
    packages = [f"annotator.kinds.{name}" for name in PLUGINS]
    packages += [ep.value for ep in importlib.metadata.entry_points(group="annotator.kinds")]
    kinds: dict[str, Kind] = {}
    for package in packages:
        declared = importlib.import_module(package).KIND
        if declared.name in kinds:
            raise RuntimeError(f"two packages declare the bundle kind {declared.name!r}")
        kinds[declared.name] = replace(declared, package=package)
    return kinds


KINDS: dict[str, Kind] = _registered()


class UnknownKind(ValueError):
    """A bundle of a kind this annotator does not serve."""


def kind(name: str) -> Kind:
    """The registered kind ``name``; :class:`UnknownKind` naming the known ones otherwise."""
    try:
        return KINDS[name]
    except KeyError:
        raise UnknownKind(
            f"bundle kind {name!r} is not one this annotator serves (known: {', '.join(KINDS)})"
        ) from None


def stage_specs() -> dict[str, StageSpec]:
    """Every registered kind's stages by name, its context labeller's too (a stage two kinds
    share appears once)."""
    specs: dict[str, StageSpec] = {}
    for declared in KINDS.values():
        for spec in (*declared.specs, *([declared.context] if declared.context else [])):
            if specs.setdefault(spec.name, spec) != spec:
                raise RuntimeError(f"kinds declare the stage {spec.name!r} differently")
    return specs


__all__ = ["DEFAULT_KIND", "KINDS", "Kind", "StageSpec", "UnknownKind", "kind", "load_object"]
