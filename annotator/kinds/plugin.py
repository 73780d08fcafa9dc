"""What a kind is: the plain description the core reads (:class:`Kind`, :class:`StageSpec`) and
the modules of its package that the core calls by name, never by kind.

A kind's package (``annotator/kinds/<name>/``) holds:

* ``__init__.py``: ``KIND = Kind(...)``, importable without torch or the configuration;
* the stage actors its :class:`StageSpec` entries name (Ray Data actor classes over rows,
  :mod:`annotator.pipeline.stages`), each with its resources in the small and paper profiles;
* ``scoring.py``: ``posteriors(config, bundle, examples, labeler=None, ablate=None)`` → (n, labels)
  posteriors as served and the transcripts heard — what ``eval``, ``calibrate`` and ``review
  retrain`` score (training/evaluate.py);
* ``train.py``: ``retrain(config, manifest, start, out, name)`` → a new bundle fine-tuned from the
  served one on a manifest's ``train`` split (``review retrain``);
* ``cli.py``: ``TRAIN_COMMANDS`` (click commands under ``annotator train``) and optionally
  ``IMPORT_COMMANDS`` (under ``annotator models import``);
* ``untrained.py``: ``build_small(staging, seed, on_step)``, the kind's parts of the small profile
  (its untrained bundle, and any encoder only it uses);
* ``parameters.py``: ``paper()`` and ``small(small_dir)``, part → parameter count
  (benchmarks/kinds.py writes them into the README's kinds table).
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any


def load_object(ref: str) -> Any:
    """``package.module:Name`` → the object (imported now, not when the kind is registered)."""
    module, _, name = ref.partition(":")
    return getattr(importlib.import_module(module), name)


@dataclass(frozen=True)
class StageSpec:
    """One model stage a kind runs after ASR in the annotate graph.

    Attributes:
        name: the stage's name: its ``stages.<name>`` section of the configuration and the
            ``<name>_at`` placement column; kinds that share a stage (the LLM label stage) share
            its name and its spec.
        actor: ``module:Class`` of the Ray Data actor class (:class:`annotator.pipeline.stages.Stage`).
        small / paper: its ``StageResources`` fields in the small and paper profiles.
        starts_engine: the actor takes ``work_arrived`` and starts its engine when the run's
            first window arrives (annotator/pipeline/warmup.py).
    """

    name: str
    actor: str
    small: Mapping[str, Any]
    paper: Mapping[str, Any]
    starts_engine: bool = False

    def actor_class(self) -> type:
        return load_object(self.actor)


@dataclass(frozen=True)
class Kind:
    """One emotion model served by annotate.

    Attributes:
        name: as written in ``bundle.json`` and on every output row (``bundle_kind``).
        summary: one line for ``annotator models show`` and the docs.
        required: files (relative to the bundle root) a bundle of this kind must hold.
        specs: the model stages after ASR, in graph order.
        hears: what the model takes in: ``audio+text`` or ``audio``.
        context: the recording-level labeller of a kind that labels each finished file's
            segments together, in time order: a :class:`StageSpec` named ``context`` whose
            ``actor`` is the labeller's class (``label(segments)``, ``columns``), run in a pool
            of Ray actors that the sink feeds before each commit (annotator/pipeline/context.py;
            its resources are ``stages.context``). The kind's stages then give each segment its
            utterance embeddings, not a label. None: the last stage labels each segment.
        models: the models its stages load besides the bundle: ``models.<field>`` of the
            configuration, or ``base.<key>`` of the bundle's record (checked before a run).
        audio_first: an LLM kind whose prompt puts the audio before the transcript.
        small_bundle: the small profile's part holding its untrained bundle (``small:<part>``).
        schedule: per profile (``small`` / ``paper``), the training fields this kind trains with
            instead of the top-level ``train.*`` ones (epochs, learning rates, γ, batch): the
            defaults of ``train.schedules.<name>`` (annotator/config.py, ``TrainSchedule``).
        package: the kind's package, set by the registry (annotator/kinds/__init__.py).
    """

    name: str
    summary: str
    required: tuple[str, ...]
    specs: tuple[StageSpec, ...]
    hears: str
    context: StageSpec | None = None
    models: tuple[str, ...] = ()
    audio_first: bool = False
    small_bundle: str = ""
    schedule: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    package: str = field(default="", compare=False)

    @property
    def stages(self) -> tuple[str, ...]:
        """The names of its model stages, in graph order."""
        return tuple(spec.name for spec in self.specs)

    def part(self, module: str) -> ModuleType:
        """The module ``module`` of the kind's package (``scoring``, ``train``, ``cli``, …)."""
        return importlib.import_module(f"{self.package}.{module}")

    def has_part(self, module: str) -> bool:
        return importlib.util.find_spec(f"{self.package}.{module}") is not None

    def served_models(self, models_config, bundle) -> dict[str, str]:
        """Where each of :attr:`models` comes from → its name, for this config and bundle."""
        out = {}
        for ref in self.models:
            source, _, key = ref.partition(".")
            out[ref] = getattr(models_config, key) if source == "models" else bundle.base[key]
        return out


# The stage every kind that ends in the LLM shares (annotator/pipeline/label.py): the prompt with
# the soft token(s) served by vLLM with the bundle's LoRA. Paper profile: 0.35 of an 80 GB GPU.
LLM_LABEL = StageSpec(
    name="label",
    actor="annotator.pipeline.label:LabelStage",
    small={"batch_size": 64, "num_cpus": 0.25, "memory_gb": 2.0},
    paper={"batch_size": 256, "num_cpus": 4, "num_gpus": 0.35, "memory_gb": 24},
    starts_engine=True,
)
