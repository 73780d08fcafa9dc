"""Writing an EmoQ bundle: its EmoQ-Former, projector, text tokenizer and LoRA, then ``bundle.json``
with the content hash last (annotator/models/bundle.py)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from annotator.models.bundle import Bundle, write_meta
from annotator.models.lora import lora_config, save_lora, save_lora_tensors


def write_bundle(
    root: Path,
    emoq_former,
    projector,
    text_tokenizer,
    lora_model,
    labels: Sequence[str],
    llm_tokenizer,
    base: dict[str, str],
    lora_rank: int,
    extra: dict[str, Any] | None = None,
) -> Bundle:
    """Write all parts, then ``bundle.json`` with the content hash last (its presence = complete)."""
    root.mkdir(parents=True, exist_ok=True)
    save_lora(lora_model, root / "lora", base["llm"])
    return _write_rest(
        root, emoq_former, projector, text_tokenizer, labels, llm_tokenizer, base, lora_rank, extra
    )


def write_bundle_from_tensors(
    root: Path,
    emoq_former,
    projector,
    text_tokenizer,
    lora_tensors: dict[str, Any],
    lora_dropout: float,
    labels: Sequence[str],
    llm_tokenizer,
    base: dict[str, str],
    lora_rank: int,
    extra: dict[str, Any] | None = None,
) -> Bundle:
    """``write_bundle`` with the LoRA given as PEFT-named tensors (``save_lora_tensors``), so no
    base LLM needs to be in memory: the same files as ``write_bundle`` for the same weights."""
    root.mkdir(parents=True, exist_ok=True)
    save_lora_tensors(
        lora_tensors, root / "lora", lora_config(lora_rank, dropout=lora_dropout), base["llm"]
    )
    return _write_rest(
        root, emoq_former, projector, text_tokenizer, labels, llm_tokenizer, base, lora_rank, extra
    )


def _write_rest(
    root: Path,
    emoq_former,
    projector,
    text_tokenizer,
    labels: Sequence[str],
    llm_tokenizer,
    base: dict[str, str],
    lora_rank: int,
    extra: dict[str, Any] | None,
) -> Bundle:
    """Everything but the adapter, then ``bundle.json`` with the content hash last."""
    from annotator.models.prompt import emotion_token_ids

    emoq_former.save(root)
    projector.save(root)
    text_tokenizer.save_pretrained(root / "text-tokenizer")
    meta = {
        "kind": "emoq",
        "labels": list(labels),
        "emotion_token_ids": emotion_token_ids(llm_tokenizer, labels),
        "base": dict(base),
        "lora_rank": lora_rank,
        "extra": extra or {},
    }
    return write_meta(root, meta)
