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
from annotator.models.bundle import LORA_TARGETS, Bundle, write_bundle_from_tensors
from training import common

# Prefixes of the stage-2 model's parts in its state dict (training/stage2.py, Stage2Model).
FORMER, PROJECTOR, LLM = "former.", "projector.", "llm."
ADAPTER_NAME = "default"  # PEFT's name for the one adapter get_peft_model adds


class ExportError(ValueError):
    """A checkpoint whose tensors do not fit the stage-2 model this config describes."""


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

    from annotator.models.emoq_former import EmoQFormer, EmoQFormerConfig
    from annotator.models.projector import Projector
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


def training_record(config: AnnotatorConfig) -> dict[str, Any]:
    """What a trained bundle's record says of its training: what serving must take away as
    training did (``Bundle.inputs``), and how stage 1 ran (a bundle of an ablation says which)."""
    return {
        "trained": True,
        "inputs": config.train.inputs,
        "stage1": {"loss": config.train.stage1_loss, "epochs": config.train.epochs_stage1},
    }


def lora_shapes(llm_config, rank: int) -> dict[str, tuple[int, int]]:
    """PEFT's saved key → shape of every LoRA matrix ``lora_config`` puts on a Qwen2/Llama-style
    decoder (``model.layers.<i>.self_attn.<q|k|v|o>_proj``), from the LLM's config alone."""
    hidden = llm_config.hidden_size
    head_dim = getattr(llm_config, "head_dim", None) or hidden // llm_config.num_attention_heads
    heads = llm_config.num_attention_heads * head_dim
    kv_heads = getattr(llm_config, "num_key_value_heads", None) or llm_config.num_attention_heads
    kv = kv_heads * head_dim
    fans = {"q_proj": (hidden, heads), "k_proj": (hidden, kv), "v_proj": (hidden, kv)}
    fans["o_proj"] = (heads, hidden)
    assert set(fans) == set(LORA_TARGETS), "lora_shapes must cover every LoRA target"
    shapes = {}
    for layer in range(llm_config.num_hidden_layers):
        for name in LORA_TARGETS:
            fan_in, fan_out = fans[name]
            module = f"base_model.model.model.layers.{layer}.self_attn.{name}"
            shapes[f"{module}.lora_A.weight"] = (rank, fan_in)
            shapes[f"{module}.lora_B.weight"] = (fan_out, rank)
    return shapes


def adapter_tensors(
    state: dict[str, Any], lora: dict[str, tuple[int, int]], where: str, llm: str, rank: int
) -> dict[str, Any]:
    """The LoRA matrices of a trained model's state (its LLM under ``llm.``), by PEFT's saved
    names (``save_lora_tensors``), each checked against ``lora_shapes``."""
    adapter = {}
    for key, shape in lora.items():
        name = LLM + _with_adapter_name(key)
        if name not in state:
            raise ExportError(f"{where} holds no {name}: not a LoRA of {llm} at rank {rank}")
        tensor = state[name]
        if tuple(tensor.shape) != shape:
            raise ExportError(
                f"{where}: {key} has shape {tuple(tensor.shape)}, "
                f"the LLM {llm} with LoRA rank {rank} needs {shape}"
            )
        adapter[key] = tensor.contiguous()
    return adapter


def _with_adapter_name(key: str) -> str:
    """PEFT's saved key → the key in the live model (``….lora_A.default.weight``)."""
    module, _, param = key.rpartition(".")
    return f"{module}.{ADAPTER_NAME}.{param}"


def _part(state: dict[str, Any], prefix: str) -> dict[str, Any]:
    return {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}
