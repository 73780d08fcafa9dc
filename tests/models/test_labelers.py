"""vLLM (CPU) serving equals the transformers + PEFT reference; the LoRA and the soft token's
vector and position matter."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from annotator.models.bundle import Bundle
from annotator.models.labeler.reference import ReferenceLabeler
from annotator.models.prompt import Prompt, PromptEmbedder

N_PROMPTS = 40
PARITY_TOL = 1e-3

pytestmark = pytest.mark.vllm

TRANSCRIPTS = [
    "I can't believe you did that",
    "thank you so much, this is wonderful",
    "the meeting is at three",
    "I miss her every day",
    "",
    "why does this keep happening to me",
]


@pytest.fixture(scope="module")
def bundle(lora_bundle):
    return Bundle.load(lora_bundle)


@pytest.fixture(scope="module")
def prompts(small_dir, bundle):
    pe = PromptEmbedder.from_llm(small_dir / "llm", bundle.labels)
    g = torch.Generator().manual_seed(0)
    width = pe.table.shape[1]
    # Soft tokens on the scale of real token embeddings, plus a few larger ones.
    scale = pe.table.std().item()
    return [
        pe.build(
            TRANSCRIPTS[i % len(TRANSCRIPTS)] + f" ({i})",
            torch.randn(width, generator=g) * scale * (1 + i % 4),
        )
        for i in range(N_PROMPTS)
    ], pe


def test_vllm_equals_reference_with_and_without_lora(small_dir, bundle, prompts, vllm_labeler):
    embeds, _ = prompts
    ref_lora = ReferenceLabeler(
        small_dir / "llm", bundle.emotion_token_ids, bundle.lora_dir
    ).posteriors(embeds)
    ref_base = ReferenceLabeler(small_dir / "llm", bundle.emotion_token_ids).posteriors(embeds)
    got_lora = vllm_labeler.posteriors(embeds)
    got_base = vllm_labeler.posteriors(embeds, with_lora=False)
    assert got_lora.shape == (N_PROMPTS, len(bundle.labels))
    np.testing.assert_allclose(got_lora.sum(axis=1), 1.0, atol=1e-5)
    assert np.abs(got_lora - ref_lora).max() < PARITY_TOL
    assert np.abs(got_base - ref_base).max() < PARITY_TOL
    # The adapter is applied: it moves the posteriors by far more than the parity tolerance.
    assert np.abs(got_lora - got_base).max() > 20 * PARITY_TOL


def test_audio_vector_matters_and_its_position_matters(prompts, vllm_labeler):
    _, pe = prompts
    prompt = pe.prompt("the meeting is at three")
    g = torch.Generator().manual_seed(3)
    vec = torch.randn(pe.table.shape[1], generator=g) * pe.table.std() * 4
    at_audio = pe.embed(prompt, vec)
    other = pe.embed(prompt, -vec)
    # The same vector, three tokens earlier (the slot keeps its pad id's row).
    moved = pe.embed(Prompt(prompt.ids, prompt.audio_position - 3), vec)
    p = vllm_labeler.posteriors([at_audio, other, moved])
    assert np.abs(p[0] - p[1]).max() > 1e-3
    assert np.abs(p[0] - p[2]).max() > 1e-3


def test_vllm_labeler_inside_a_ray_actor(ray_local, small_dir, bundle, prompts, vllm_labeler):
    """The serving path of the pipeline: the engine lives in a Ray actor, prompts go by value."""
    from annotator.models.labeler.vllm import VLLMLabeler

    embeds, _ = prompts
    actor = (
        ray_local.remote(VLLMLabeler)
        .options(num_cpus=1)
        .remote(small_dir / "llm", bundle.emotion_token_ids, bundle.lora_dir)
    )
    remote = ray_local.get(actor.posteriors.remote(embeds[:8]))
    ray_local.kill(actor)
    assert np.abs(remote - vllm_labeler.posteriors(embeds[:8])).max() < 1e-5


def test_vllm_equals_reference_with_several_soft_tokens(small_dir, bundle, vllm_labeler):
    """EmoSLLM's prompts (annotator/kinds/emosllm/model.py): four soft tokens before the transcript,
    served by the same engine and adapter; each of the four moves the posterior."""
    pe = PromptEmbedder.from_llm(small_dir / "llm", bundle.labels, audio_slots=4, audio_first=True)
    g = torch.Generator().manual_seed(5)
    scale = pe.table.std().item() * 3
    soft = [torch.randn(4, pe.table.shape[1], generator=g) * scale for _ in range(12)]
    embeds = [pe.build(TRANSCRIPTS[i % len(TRANSCRIPTS)], s) for i, s in enumerate(soft)]
    reference = ReferenceLabeler(
        small_dir / "llm", bundle.emotion_token_ids, bundle.lora_dir
    ).posteriors(embeds)
    got = vllm_labeler.posteriors(embeds)
    assert np.abs(got - reference).max() < PARITY_TOL
    prompt = pe.prompt(TRANSCRIPTS[0])
    changed = []
    for k in range(4):
        other = soft[0].clone()
        other[k] = -other[k]
        changed.append(pe.embed(prompt, other))
    moved = vllm_labeler.posteriors([embeds[0], *changed])
    assert (np.abs(moved[1:] - moved[0]).max(axis=1) > 1e-3).all()
