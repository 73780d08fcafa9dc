"""An untrained EmoQ bundle: a fresh EmoQ-Former and projector and a zero LoRA (annotator/models/
lora.py), what training starts from and what the pipeline serves until a trained bundle replaces
it."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from annotator.kinds.emoq.bundle import write_bundle, write_bundle_from_tensors
from annotator.models.bundle import Bundle
from annotator.models.lora import lora_config, untrained_lora, untrained_lora_tensors


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

    from annotator.kinds.emoq.emoq_former import EmoQFormer
    from annotator.kinds.emoq.projector import Projector
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


def build_small(staging: Path, seed: int, on_step) -> None:
    """The kind's part of the small profile (annotator/kinds/plugin.py): ``bundle``, an untrained
    EmoQ bundle over the profile's text encoder, HuBERT and LLM."""
    from annotator.models.profiles import SMALL_PREFIX

    on_step("untrained EmoQ bundle")
    build_untrained_bundle(
        staging / "bundle",
        text_encoder=staging / "text-encoder",
        hubert=staging / "hubert",
        llm=staging / "llm",
        base_names={
            "hubert": SMALL_PREFIX + "hubert",
            "text_encoder": SMALL_PREFIX + "text-encoder",
            "llm": SMALL_PREFIX + "llm",
        },
        seed=seed,
    )
