"""The LoRA every LLM kind trains and serves: its configuration (the paper's: attention
projections, no ``modules_to_save``), a fresh adapter for an untrained bundle, and the adapter
written in PEFT's on-disk format so vLLM loads it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")


def save_lora(peft_model, directory: Path, base_name: str) -> None:
    """Save a PEFT adapter so vLLM can load it, naming the base by its config name, not a path."""
    peft_model.save_pretrained(directory, safe_serialization=True)
    _tidy_adapter_config(directory, base_name)


def save_lora_tensors(tensors: dict[str, Any], directory: Path, config, base_name: str) -> None:
    """Write a LoRA adapter in PEFT's on-disk format from its tensors alone, without the base
    model: what ``save_lora`` writes for a PEFT model holding these weights.

    Args:
        tensors: PEFT's saved key names (``base_model.model.<module>.lora_A.weight``, no adapter
            name), contiguous tensors.
        config: the ``LoraConfig`` the adapter was trained with (see ``lora_config``).
        base_name: the base LLM's config name, written as ``base_model_name_or_path``.
    """
    import copy

    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    # As PeftModel.save_pretrained: the safetensors carry {"format": "pt"}, the config is saved
    # for inference.
    save_file(tensors, directory / "adapter_model.safetensors", metadata={"format": "pt"})
    config = copy.deepcopy(config)
    config.inference_mode = True
    config.save_pretrained(str(directory))
    _tidy_adapter_config(directory, base_name)


def _tidy_adapter_config(directory: Path, base_name: str) -> None:
    config_path = directory / "adapter_config.json"
    config = json.loads(config_path.read_text())
    config["base_model_name_or_path"] = base_name
    # PEFT writes target_modules from a set (order varies by hash seed) and a README with paths:
    # both would make the same weights hash differently.
    if isinstance(config.get("target_modules"), list):
        config["target_modules"] = sorted(config["target_modules"])
    (directory / "README.md").unlink(missing_ok=True)
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True))


def lora_config(rank: int, dropout: float = 0.1, init: bool | str = True):
    """The LoRA the paper trains: attention projections, dropout 0.1, no ``modules_to_save``
    (vLLM cannot serve adapters that carry full modules)."""
    from peft import LoraConfig

    return LoraConfig(
        r=rank,
        lora_alpha=2 * rank,
        lora_dropout=dropout,
        target_modules=list(LORA_TARGETS),
        init_lora_weights=init,
        task_type="CAUSAL_LM",
    )


def untrained_lora(llm: Path, rank: int):
    """The LLM at ``llm`` (float32) with a fresh LoRA of ``rank`` (its B matrices zero: the
    base model's outputs unchanged), as an untrained bundle of any LLM kind starts."""
    import torch
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(llm, dtype=torch.float32)
    return get_peft_model(model, lora_config(rank))


def untrained_lora_tensors(llm: Path, rank: int, seed: int = 0) -> dict[str, Any]:
    """A fresh LoRA of ``rank`` on the LLM at ``llm`` as PEFT-named tensors for
    ``write_bundle_from_tensors``, from the LLM's config alone: no weight is read, the model is
    built on the meta device only to find the target layers. A is initialised as PEFT does
    (Kaiming-uniform, bound 1/√in_features), B is zero: the base model's outputs unchanged.
    For a 7B LLM, where ``untrained_lora`` would hold the whole model in float32 (~30 GB)."""
    import math

    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(llm))
    generator = torch.Generator().manual_seed(seed)
    tensors = {}
    for name, module in model.named_modules():
        if name.rsplit(".", 1)[-1] not in LORA_TARGETS or not isinstance(module, torch.nn.Linear):
            continue
        bound = 1 / math.sqrt(module.in_features)
        a = torch.empty(rank, module.in_features).uniform_(-bound, bound, generator=generator)
        tensors[f"base_model.model.{name}.lora_A.weight"] = a
        tensors[f"base_model.model.{name}.lora_B.weight"] = torch.zeros(module.out_features, rank)
    return tensors
