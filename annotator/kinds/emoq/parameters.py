"""EmoQ's parts and their parameters (annotator/models/kind_parameters.py): HuBERT-large, an
EmoQ-Former started from RoBERTa-base, the projector, Qwen2.5-7B-Instruct and the LoRA."""

from __future__ import annotations

from pathlib import Path


def paper() -> dict[str, int]:
    from annotator.kinds.emoq.emoq_former import EmoQFormer, EmoQFormerConfig
    from annotator.kinds.emoq.projector import Projector
    from annotator.models.kind_parameters import count, lora_parameters
    from annotator.models.paper_shapes import (
        hubert_large_config,
        on_meta,
        parameter_count,
        qwen25_7b_config,
        roberta_base_config,
    )

    qwen, hubert = qwen25_7b_config(), hubert_large_config()
    former_config = EmoQFormerConfig.from_text_encoder(
        roberta_base_config(), hubert.hidden_size, 16
    )
    former = on_meta(EmoQFormer, former_config)
    projector = on_meta(lambda c: Projector(c.embed_dim, qwen.hidden_size), former_config)
    return {
        "hubert-large": parameter_count("hubert"),
        "emoq-former": count(former),
        "projector": count(projector),
        "qwen2.5-7b": parameter_count("llm"),
        "lora": lora_parameters(qwen),
    }


def small(small_dir: Path) -> dict[str, int]:
    from annotator.models.kind_parameters import safetensors_parameters as count

    return {
        "hubert": count(small_dir / "hubert"),
        "emoq-former + projector": count(small_dir / "bundle")
        - count(small_dir / "bundle" / "lora"),
        "llm": count(small_dir / "llm"),
        "lora": count(small_dir / "bundle" / "lora"),
    }
