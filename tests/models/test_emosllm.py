"""EmoSLLM (annotator/kinds/emosllm/model.py) over the small profile's random WavLM: the audio reaches
every soft token, a batch gives each item what it gets alone, and training puts the soft tokens
in the prompt rows serving builds (audio first, several slots)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from annotator.kinds.emosllm.model import EmoSLLMEmbedder
from annotator.models.bundle import Bundle
from annotator.models.prompt import PromptEmbedder
from training.llm import with_soft_tokens


@pytest.fixture(scope="module")
def bundle(small_dir):
    return Bundle.load(small_dir / "emosllm-bundle")


@pytest.fixture(scope="module")
def embedder(small_dir, bundle):
    return EmoSLLMEmbedder(bundle, str(small_dir / "wavlm"))


def _waves():
    g = np.random.default_rng(0)
    t = np.arange(16_000 * 2) / 16_000
    tone = (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    return [tone, g.normal(0, 0.1, 16_000).astype(np.float32)]


def test_the_untrained_bundle_names_its_parts(bundle):
    assert bundle.kind == "emosllm" and bundle.soft_tokens == 4 and bundle.audio_first
    assert bundle.base == {"audio_encoder": "small:wavlm", "llm": "small:llm"}
    assert bundle.text_tokenizer_dir is None  # the LLM reads the transcript itself
    assert len(bundle.emotion_token_ids) == len(bundle.labels)


def test_soft_tokens_come_from_the_audio_and_do_not_depend_on_the_batch(embedder, bundle):
    long, short = _waves()
    together = embedder([long, short])
    assert together.shape == (2, bundle.soft_tokens, 128)  # the small Qwen2's width
    alone = embedder([short])[0]
    torch.testing.assert_close(together[1], alone, atol=1e-5, rtol=1e-4)
    # Another sound, other tokens: every one of the several soft tokens hears the audio.
    per_token = (together[0] - together[1]).norm(dim=-1)
    assert (per_token > 1e-3 * together.norm(dim=-1).mean()).all()


def test_training_places_the_soft_tokens_where_serving_does(small_dir, bundle, embedder):
    prompts = PromptEmbedder.for_bundle(small_dir / "llm", bundle)
    prompt = prompts.prompt("I can't believe you did that")
    assert prompt.audio_slots == 4
    rendered = prompts.tokenizer.decode(prompt.ids[prompt.audio_position + 4 :])
    assert "Transcript: I can't believe you did that" in rendered  # the audio comes first
    soft = embedder(_waves()[:1])[0]
    served = prompts.embed(prompt, soft)
    ids = torch.tensor([prompt.ids])
    trained = with_soft_tokens(
        prompts.table[ids], torch.tensor([prompt.audio_position]), soft[None]
    )[0]
    torch.testing.assert_close(trained, served)
    assert torch.equal(served[prompt.audio_position : prompt.audio_position + 4], soft)
