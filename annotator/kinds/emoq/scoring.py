"""A manifest scored by an EmoQ bundle as it is served: HuBERT + EmoQ-Former + projector give
each segment's soft token, the LLM labels it (training/evaluate.py, ``llm_posteriors``)."""

from __future__ import annotations

from collections.abc import Sequence


def posteriors(config, bundle, examples: Sequence, labeler=None, ablate: str | None = None):
    from annotator.kinds.emoq.embedder import EmotionEmbedder
    from training import common
    from training.evaluate import llm_posteriors

    device, dtype = common.encoder_device(config)
    embedder = EmotionEmbedder(
        bundle,
        common.model_path(config.models.hubert, config),
        config.models.hubert_layer,
        device=device,
        dtype=dtype,
    )

    def soft_tokens(waveforms, texts):
        return embedder(waveforms, texts)[1]

    return llm_posteriors(config, bundle, examples, soft_tokens, labeler, ablate)
