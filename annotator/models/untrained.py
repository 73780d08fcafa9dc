"""Bundles before any training: a fresh LoRA (on the LLM itself, or from its config alone for a
7B model) and an untrained EmoQ bundle, what training starts from and what the pipeline serves
until a trained bundle replaces it. Written through annotator/models/bundle.py."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from annotator.models.bundle import (
    LORA_TARGETS,
    Bundle,
    lora_config,
    write_bundle,
    write_bundle_from_tensors,
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


def build_untrained_bundle(
    root: Path,
    text_encoder: Path,
    hubert: Path,
    llm: Path,
    base_names: dict[str, str],
    seed: int = 0,
    labels: Sequence[str] | None = None,
    num_queries: int = 16,
    lora_rank: int = 8,
    lora_from_config: bool = False,
) -> Bundle:
    """A bundle with a freshly initialised EmoQ-Former/projector and a zero LoRA: the starting
    point of training, and what the pipeline serves before any training.

    ``lora_from_config``: make the LoRA from the LLM's config (``untrained_lora_tensors``)
    rather than on the LLM loaded in float32 (``untrained_lora``), for a 7B LLM."""
    import torch
    from transformers import AutoConfig, AutoTokenizer

    from annotator.models.emoq_former import EmoQFormer
    from annotator.models.projector import Projector
    from annotator.schema import DEFAULT_LABEL_SET, label_set

    labels = list(labels or label_set(DEFAULT_LABEL_SET))
    torch.manual_seed(seed)
    audio_dim = AutoConfig.from_pretrained(hubert).hidden_size
    emoq = EmoQFormer.from_pretrained(
        str(text_encoder), audio_dim=audio_dim, num_queries=num_queries
    )
    projector = Projector(emoq.config.embed_dim, AutoConfig.from_pretrained(llm).hidden_size)
    text_tokenizer, llm_tokenizer = (AutoTokenizer.from_pretrained(p) for p in (text_encoder, llm))
    if lora_from_config:
        lora = untrained_lora_tensors(llm, lora_rank, seed)
        return write_bundle_from_tensors(
            root,
            emoq,
            projector,
            text_tokenizer,
            lora,
            lora_config(lora_rank).lora_dropout,
            labels,
            llm_tokenizer,
            base_names,
            lora_rank,
            extra={"trained": False},
        )
    lora = untrained_lora(llm, lora_rank)
    return write_bundle(
        root,
        emoq,
        projector,
        text_tokenizer,
        lora,
        labels,
        llm_tokenizer,
        base_names,
        lora_rank,
        extra={"trained": False},
    )
