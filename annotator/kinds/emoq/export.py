"""A stage-2 checkpoint → the bundle `annotator annotate` serves (EmoQ-Former, projector, LoRA
adapter in PEFT's format without modules_to_save, label set, emotion-token ids, version).

The export reads the checkpoint's tensors and never builds the base LLM: the checkpoint holds
the trainable weights only (``training.common.trainable_state`` of the stage-2 model), which are
the EmoQ-Former, the projector and the LoRA matrices, a few hundred MB at the paper's sizes where
the frozen Qwen2.5-7B would be ~30 GB in float32. The LLM's config and tokenizer are all it reads
of the base model.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from annotator.config import AnnotatorConfig
from annotator.kinds.emoq.bundle import write_bundle_from_tensors
from annotator.models.bundle import Bundle
from training import common
from training.llm import (
    ExportError,
    _part,
    _with_adapter_name,
    adapter_tensors,
    lora_shapes,
    training_record,
)

# Prefixes of the stage-2 model's parts in its state dict (annotator/kinds/emoq/stage2.py, Stage2Model).
FORMER, PROJECTOR, LLM = "former.", "projector.", "llm."


def export_bundle(
    config: AnnotatorConfig,
    stage1_dir: Path,
    checkpoint_dir: str,
    out: Path,
    extra: dict[str, Any] | None = None,
) -> Bundle:
    """Write the bundle of a stage-2 checkpoint; ``stage1_dir`` is the EmoQ-Former stage 2
    started from (its config, and any weight stage 2 did not train)."""
    import torch
    from safetensors import safe_open
    from transformers import AutoConfig, AutoTokenizer

    from annotator.kinds.emoq.emoq_former import EmoQFormer, EmoQFormerConfig
    from annotator.kinds.emoq.projector import Projector
    from annotator.schema import label_set

    labels = list(label_set(config.train.label_set))
    llm_dir = common.model_path(config.models.llm, config)
    llm_config = AutoConfig.from_pretrained(llm_dir)
    state = common.checkpoint_state(checkpoint_dir)

    stage1 = Path(common.model_path(str(stage1_dir), config))  # a local directory or s3://
    former_config = EmoQFormerConfig(**json.loads((stage1 / "emoq_former.json").read_text()))
    # Built without storage: every weight is then assigned the checkpoint's (or stage 1's)
    # tensor, so the EmoQ-Former is in memory once.
    with torch.device("meta"):
        former = EmoQFormer(former_config)
        projector = Projector(former_config.embed_dim, llm_config.hidden_size)
    trained_former = {n for n, p in former.named_parameters() if p.requires_grad}
    lora = lora_shapes(llm_config, config.train.lora_rank)
    expected = (
        {FORMER + k for k in trained_former}
        | {PROJECTOR + k for k in projector.state_dict()}
        | {LLM + _with_adapter_name(k) for k in lora}
    )
    missing, unexpected = sorted(expected - state.keys()), sorted(state.keys() - expected)
    if missing or unexpected:
        raise ExportError(
            f"checkpoint {checkpoint_dir} does not fit the stage-2 model of this config "
            f"(LLM {config.models.llm}, LoRA rank {config.train.lora_rank}): "
            f"{len(missing)} missing {missing[:3]}, {len(unexpected)} unexpected {unexpected[:3]}"
        )
    adapter = adapter_tensors(
        state, lora, f"checkpoint {checkpoint_dir}", config.models.llm, config.train.lora_rank
    )
    former_state = _part(state, FORMER)
    frozen = former.state_dict().keys() - former_state.keys()  # what stage 2 did not train
    if frozen:
        with safe_open(str(stage1 / "emoq_former.safetensors"), framework="pt") as handle:
            former_state.update({k: handle.get_tensor(k) for k in frozen})
    try:
        former.load_state_dict(former_state, assign=True)
        projector.load_state_dict(_part(state, PROJECTOR), assign=True)
    except RuntimeError as exc:  # shapes that differ from the stage-1 former / this LLM
        raise ExportError(f"checkpoint {checkpoint_dir} does not fit: {exc}") from None

    base = {
        "hubert": config.models.hubert,
        "text_encoder": config.models.text_encoder,
        "llm": config.models.llm,
    }
    return write_bundle_from_tensors(
        out,
        former.eval(),
        projector.eval(),
        AutoTokenizer.from_pretrained(common.model_path(config.models.text_encoder, config)),
        adapter,
        config.train.lora_dropout,
        labels,
        AutoTokenizer.from_pretrained(llm_dir),
        base,
        config.train.lora_rank,
        extra={**training_record(config), **(extra or {})},
    )
