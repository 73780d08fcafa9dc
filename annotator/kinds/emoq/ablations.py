"""The paper's ablations as named settings of ``train`` (``--ablation NAME`` on ``annotator train
stage1|stage2|cv``), so each runs by the same commands as the full model:

- ``audio-only`` / ``text-only`` (Table 4): the other input taken away in training, and in
  serving too, as the bundle records it (``Bundle.inputs``).
- ``supcon-only`` / ``focal-only`` (Table 5): one term of MAL alone in stage 1.
- ``no-stage1`` (Table 6): stage 2 starts from the EmoQ-Former as initialised.

Table 4's "audio + text without the EmoQ-Former" needs another fusion module and is not here.
"""

from __future__ import annotations

from typing import Any

from annotator.config import AnnotatorConfig, ConfigError, TrainConfig

ABLATIONS: dict[str, dict[str, Any]] = {
    "audio-only": {"inputs": "audio"},
    "text-only": {"inputs": "text"},
    "supcon-only": {"stage1_loss": "supcon"},
    "focal-only": {"stage1_loss": "focal"},
    "no-stage1": {"epochs_stage1": 0},
}


def ablated(config: AnnotatorConfig, name: str | None) -> AnnotatorConfig:
    """``config`` with the ablation's ``train`` settings (``None``: unchanged)."""
    if name is None:
        return config
    if name not in ABLATIONS:
        raise ConfigError(f"unknown ablation {name!r}; one of {', '.join(ABLATIONS)}")
    train = TrainConfig.model_validate({**config.train.model_dump(), **ABLATIONS[name]})
    return config.model_copy(update={"train": train})
