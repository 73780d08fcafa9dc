"""A stage-2 checkpoint → the bundle `annotator annotate` serves (EmoQ-Former, projector, LoRA
adapter in PEFT's format without modules_to_save, label set, emotion-token ids, version)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from annotator.config import AnnotatorConfig
from annotator.models.bundle import Bundle, write_bundle
from training import common
from training.stage2 import build


def export_bundle(
    config: AnnotatorConfig,
    stage1_dir: Path,
    checkpoint_dir: str,
    out: Path,
    extra: dict[str, Any] | None = None,
) -> Bundle:
    from annotator.schema import label_set

    labels = list(label_set(config.train.label_set))
    model, text_tok, prompts = build(config, stage1_dir, labels)
    result = model.load_state_dict(common.checkpoint_state(checkpoint_dir), strict=False)
    if result.unexpected_keys:
        raise RuntimeError(
            f"checkpoint does not fit the stage-2 model: {result.unexpected_keys[:3]}"
        )
    model.eval()
    base = {
        "hubert": config.models.hubert,
        "text_encoder": config.models.text_encoder,
        "llm": config.models.llm,
    }
    return write_bundle(
        out,
        model.former,
        model.projector,
        text_tok,
        model.llm,
        labels,
        prompts.tokenizer,
        base,
        config.train.lora_rank,
        extra={"trained": True, **(extra or {})},
    )
