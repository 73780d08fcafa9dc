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


def _served_alone(labeler, embeds: torch.Tensor) -> tuple[np.ndarray, int]:
    """One prompt's posterior and how many of its tokens came from the prefix cache."""
    before = labeler.cached_tokens
    probs = labeler.posteriors([embeds])[0]
    return probs, labeler.cached_tokens - before


def test_the_template_is_computed_once_and_a_soft_token_is_never_taken_from_the_cache(
    small_dir, bundle, vllm_labeler
):
    """Prefix caching: a second prompt reuses the template's blocks, but a block that holds the
    soft token is keyed by its contents, so a prompt that differs from a cached one only in its
    (late) soft token is computed again and gets its own posterior."""
    from annotator.models.labeler.vllm import CPU_BLOCK_SIZE

    pe = PromptEmbedder.from_llm(small_dir / "llm", bundle.labels)
    # A transcript long enough that the soft slot falls in a whole block before the prompt's
    # last (vLLM caches whole blocks only, and never the block of the last token).
    words = [
        "we",
        "waited",
        "at",
        "the",
        "station",
        "for",
        "an",
        "hour",
        "and",
        "the",
        "train",
        "never",
        "came",
    ]
    for n in range(len(words), 10 * len(words)):
        prompt = pe.prompt(" ".join(words[i % len(words)] for i in range(n)))
        block = prompt.audio_position // CPU_BLOCK_SIZE
        if 0 < block < (len(prompt) - 1) // CPU_BLOCK_SIZE:
            break
    else:
        raise AssertionError("no transcript puts the soft slot in a whole, cacheable block")
    g = torch.Generator().manual_seed(11)
    vec = torch.randn(pe.table.shape[1], generator=g) * pe.table.std() * 4
    first, other = pe.embed(prompt, vec), pe.embed(prompt, -vec)
    reference = ReferenceLabeler(
        small_dir / "llm", bundle.emotion_token_ids, bundle.lora_dir
    ).posteriors([first, other])

    vllm_labeler.reset_prefix_cache()
    p_first, cached_first = _served_alone(vllm_labeler, first)
    p_again, cached_again = _served_alone(vllm_labeler, first)
    p_other, cached_other = _served_alone(vllm_labeler, other)
    assert cached_first == 0
    # The same prompt again: every whole block before its last token comes from the cache.
    assert cached_again == (len(prompt) - 1) // CPU_BLOCK_SIZE * CPU_BLOCK_SIZE
    # The soft token differs: only the blocks before the soft slot's are reused.
    assert cached_other == block * CPU_BLOCK_SIZE
    assert np.abs(p_first - reference[0]).max() < PARITY_TOL
    assert np.abs(p_again - reference[0]).max() < PARITY_TOL
    assert np.abs(p_other - reference[1]).max() < PARITY_TOL
    assert np.abs(p_other - p_first).max() > 10 * PARITY_TOL

    # Another transcript shares the template's first block(s) with everything served before.
    _, cached_new = _served_alone(vllm_labeler, pe.build("the meeting is at three", vec))
    assert cached_new >= CPU_BLOCK_SIZE
    # A cached block is the adapter's: the base LLM computes the same prompt afresh.
    before = vllm_labeler.cached_tokens
    base = vllm_labeler.posteriors([first], with_lora=False)[0]
    assert vllm_labeler.cached_tokens == before
    assert np.abs(base - p_first).max() > 20 * PARITY_TOL


def test_prompts_from_several_threads_share_the_engine(bundle, prompts, vllm_labeler):
    """The label stage runs two batches at once on one engine: each caller gets its own prompts'
    posteriors, in its order, equal to those served alone."""
    from concurrent.futures import ThreadPoolExecutor

    embeds, _ = prompts
    alone = vllm_labeler.posteriors(embeds)
    halves = [embeds[0::2], embeds[1::2][::-1]]
    with ThreadPoolExecutor(2) as pool:
        even, odd_reversed = pool.map(vllm_labeler.posteriors, halves)
    assert np.abs(even - alone[0::2]).max() < 1e-5
    assert np.abs(odd_reversed - alone[1::2][::-1]).max() < 1e-5
