"""A manifest scored by an EmoSLLM bundle as it is served: the audio encoder and the
query-pooling mapper give each segment's soft tokens, the LLM labels them (training/evaluate.py,
``llm_posteriors``)."""

from __future__ import annotations

from collections.abc import Sequence


def posteriors(config, bundle, examples: Sequence, labeler=None, ablate: str | None = None):
    from annotator.kinds.emosllm.model import EmoSLLMEmbedder
    from training import common
    from training.evaluate import llm_posteriors

    device, dtype = common.encoder_device(config)
    mapper = EmoSLLMEmbedder(
        bundle, common.model_path(bundle.base["audio_encoder"], config), device, dtype
    )

    def soft_tokens(waveforms, _texts):
        return mapper(waveforms)

    return llm_posteriors(config, bundle, examples, soft_tokens, labeler, ablate)
