"""The EmoSLLM kind's part of the small profile (annotator/kinds/plugin.py): ``wavlm``, a random
WavLM shaped like the profile's HuBERT (at paper size microsoft/wavlm-large), and
``emosllm-bundle``, an untrained EmoSLLM bundle over it and the profile's LLM."""

from __future__ import annotations

from pathlib import Path

# The small bundle's query pooling (the paper's: 32 queries, 768 wide, 2 layers, 8 heads).
QUERIES, WIDTH, HEADS = 4, 64, 4


def build_wavlm(dst: Path, seed: int) -> None:
    import torch
    from transformers import WavLMConfig, WavLMModel

    from annotator.models.profiles import SmallSizes, encoder_shape, save_feature_extractor

    sizes = SmallSizes()
    config = WavLMConfig(**encoder_shape(sizes, sizes.hubert_layers))
    torch.manual_seed(seed + 2)
    WavLMModel(config).eval().save_pretrained(dst, safe_serialization=True)
    save_feature_extractor(dst)


def build_small(staging: Path, seed: int, on_step) -> None:
    from annotator.kinds.emosllm.model import build_untrained_emosllm_bundle
    from annotator.models.profiles import SMALL_PREFIX

    on_step("random WavLM + untrained EmoSLLM bundle")
    build_wavlm(staging / "wavlm", seed)
    build_untrained_emosllm_bundle(
        staging / "emosllm-bundle",
        staging / "wavlm",
        staging / "llm",
        {"audio_encoder": SMALL_PREFIX + "wavlm", "llm": SMALL_PREFIX + "llm"},
        seed=seed,
        num_queries=QUERIES,
        width=WIDTH,
        heads=HEADS,
    )
