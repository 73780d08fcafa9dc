"""Parameters of each bundle kind (annotator/models/kinds.py), part by part: at paper size counted
on PyTorch's ``meta`` device from the published configurations (no weights, no memory), at the
small profile's size read from its safetensors headers. ``benchmarks/kinds.py`` writes both into
the README's kinds table.

Paper-size models per kind (the project's model notes): EmoQ — HuBERT-large, an EmoQ-Former
started from RoBERTa-base, Qwen2.5-7B-Instruct; EmoSLLM — WavLM-Large, the query-pooling mapper
(32 queries, 768 wide, 2 layers), Llama-3.2-3B-Instruct; Qieemo — a HuBERT-large CTC encoder
(facebook/hubert-large-ls960-ft) and the fusion/attention/classifier over its upper 12 blocks.
LoRA rank 8 on q/k/v/o for the LLM kinds.
"""

from __future__ import annotations

from pathlib import Path

LORA_RANK = 8


def wavlm_large_config():
    """microsoft/wavlm-large's shape (316 M parameters on its model card)."""
    from transformers import WavLMConfig

    return WavLMConfig(
        hidden_size=1024,
        num_hidden_layers=24,
        num_attention_heads=16,
        intermediate_size=4096,
        conv_dim=(512,) * 7,
        conv_bias=False,
        feat_extract_norm="layer",
        do_stable_layer_norm=True,
        num_conv_pos_embeddings=128,
        num_conv_pos_embedding_groups=16,
    )


def llama32_3b_config():
    """meta-llama/Llama-3.2-3B-Instruct's shape (3.21 B parameters, tied embeddings)."""
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=128_256,
        hidden_size=3072,
        intermediate_size=8192,
        num_hidden_layers=28,
        num_attention_heads=24,
        num_key_value_heads=8,
        head_dim=128,
        tie_word_embeddings=True,
        max_position_embeddings=131_072,
    )


def _count(model) -> int:
    return sum(p.numel() for p in model.parameters())


def _lora(llm_config) -> int:
    from training.export import lora_shapes

    return sum(a * b for a, b in lora_shapes(llm_config, LORA_RANK).values())


def paper_parameters() -> dict[str, dict[str, int]]:
    """kind → part → parameters at paper size."""
    import transformers

    from annotator.models.emoq_former import EmoQFormer, EmoQFormerConfig
    from annotator.models.emosllm import EmoSLLMConfig, QueryPoolingMapper
    from annotator.models.paper_shapes import (
        hubert_large_config,
        on_meta,
        parameter_count,
        qwen25_7b_config,
        roberta_base_config,
    )
    from annotator.models.projector import Projector
    from annotator.models.qieemo import Qieemo, QieemoConfig, upper_blocks

    qwen, llama, hubert = qwen25_7b_config(), llama32_3b_config(), hubert_large_config()
    former_config = EmoQFormerConfig.from_text_encoder(
        roberta_base_config(), hubert.hidden_size, 16
    )
    former = on_meta(EmoQFormer, former_config)
    projector = on_meta(lambda c: Projector(c.embed_dim, qwen.hidden_size), former_config)
    mapper = on_meta(QueryPoolingMapper, EmoSLLMConfig(wavlm_large_config().hidden_size, 3072))
    qieemo = on_meta(
        Qieemo,
        QieemoConfig(
            encoder_dim=hubert.hidden_size,
            vocab=hubert.vocab_size,
            blocks=upper_blocks(hubert.num_hidden_layers),
            num_labels=4,
        ),
    )
    return {
        "emoq": {
            "hubert-large": parameter_count("hubert"),
            "emoq-former": _count(former),
            "projector": _count(projector),
            "qwen2.5-7b": parameter_count("llm"),
            "lora": _lora(qwen),
        },
        "emosllm": {
            "wavlm-large": _count(on_meta(transformers.WavLMModel, wavlm_large_config())),
            "mapper": _count(mapper),
            "llama-3.2-3b": _count(on_meta(transformers.LlamaForCausalLM, llama)),
            "lora": _lora(llama),
        },
        "qieemo": {
            "hubert-large-ctc": _count(on_meta(transformers.HubertForCTC, hubert)),
            "qieemo": _count(qieemo),
        },
    }


def _safetensors_parameters(directory: Path) -> int:
    """Parameters stored in a directory's safetensors files (headers only, nothing loaded)."""
    import math

    from safetensors import safe_open

    total = 0
    for path in sorted(Path(directory).rglob("*.safetensors")):
        with safe_open(str(path), framework="pt") as handle:
            for key in handle.keys():  # noqa: SIM118 (safe_open is not a dict)
                total += math.prod(handle.get_slice(key).get_shape())
    return total


def small_parameters(small_dir: Path) -> dict[str, dict[str, int]]:
    """kind → part → parameters in the small profile (its untrained bundles' shapes)."""
    small = Path(small_dir)
    count = _safetensors_parameters
    return {
        "emoq": {
            "hubert": count(small / "hubert"),
            "emoq-former + projector": count(small / "bundle") - count(small / "bundle" / "lora"),
            "llm": count(small / "llm"),
            "lora": count(small / "bundle" / "lora"),
        },
        "emosllm": {
            "wavlm": count(small / "wavlm"),
            "mapper": count(small / "emosllm-bundle") - count(small / "emosllm-bundle" / "lora"),
            "llm": count(small / "llm"),
            "lora": count(small / "emosllm-bundle" / "lora"),
        },
        "qieemo": {"ctc": count(small / "ctc"), "qieemo": count(small / "qieemo-bundle")},
    }
