"""EmoSLLM's parts and their parameters (annotator/models/kind_parameters.py): WavLM-Large, the
query-pooling mapper (32 queries, 768 wide, 2 layers), Llama-3.2-3B-Instruct and the LoRA."""

from __future__ import annotations

from pathlib import Path


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


def paper() -> dict[str, int]:
    import transformers

    from annotator.kinds.emosllm.model import EmoSLLMConfig, QueryPoolingMapper
    from annotator.models.kind_parameters import count, lora_parameters
    from annotator.models.paper_shapes import on_meta

    llama = llama32_3b_config()
    mapper = on_meta(QueryPoolingMapper, EmoSLLMConfig(wavlm_large_config().hidden_size, 3072))
    return {
        "wavlm-large": count(on_meta(transformers.WavLMModel, wavlm_large_config())),
        "mapper": count(mapper),
        "llama-3.2-3b": count(on_meta(transformers.LlamaForCausalLM, llama)),
        "lora": lora_parameters(llama),
    }


def small(small_dir: Path) -> dict[str, int]:
    from annotator.models.kind_parameters import safetensors_parameters as count

    bundle = small_dir / "emosllm-bundle"
    return {
        "wavlm": count(small_dir / "wavlm"),
        "mapper": count(bundle) - count(bundle / "lora"),
        "llm": count(small_dir / "llm"),
        "lora": count(bundle / "lora"),
    }
