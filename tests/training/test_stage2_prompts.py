"""Stage 2 places the soft token by the position its prompt recorded, exactly where serving does,
with an LLM tokenizer that has no <AUDIO> token (the small one, like Qwen2.5-Instruct's)."""

from __future__ import annotations

import pytest
import torch

from annotator.config import load_config
from annotator.models.bundle import Bundle
from annotator.models.prompt import PromptEmbedder
from training import losses
from training.stage2 import build, sequences

TEXTS = ["hi", "", "I can't believe you did that to me again, after everything <AUDIO>"]


@pytest.fixture(scope="module")
def stage2(small_home, small_dir):
    """The stage-2 model as training builds it; the untrained bundle's EmoQ-Former is stage 1."""
    config = load_config(None, models={"home": str(small_home)})
    labels = Bundle.load(small_dir / "bundle").labels
    model, text_tok, prompts = build(config, small_dir / "bundle", labels)
    return model, text_tok, prompts, labels


def test_the_small_llm_has_no_audio_token(stage2):
    _, _, prompts, _ = stage2
    assert "<AUDIO>" not in prompts.tokenizer.get_vocab()


def test_training_and_serving_prompts_are_identical(stage2, small_dir):
    """Same segment → the same token ids, the same slot, and (batched, right-padded, prompts of
    different lengths) the same embedding rows as ``PromptEmbedder.build`` gives LabelStage."""
    model, _, prompts, labels = stage2
    served = PromptEmbedder.from_llm(small_dir / "llm", labels)
    ids, mask, _, audio_position = sequences(prompts, TEXTS, labels, [0, 1, 2], 5.0)
    assert len({int(m.sum()) for m in mask}) == len(TEXTS)  # really padded
    soft = torch.randn(
        len(TEXTS), served.table.shape[1], generator=torch.Generator().manual_seed(0)
    )
    with torch.no_grad():
        trained = model.prompt_embeds(ids, audio_position, soft)
    for k, text in enumerate(TEXTS):
        prompt = served.prompt(text)
        assert ids[k, : len(prompt)].tolist() == list(prompt.ids)
        assert int(audio_position[k]) == prompt.audio_position
        torch.testing.assert_close(
            trained[k, : len(prompt)], served.build(text, soft[k]), rtol=0, atol=0
        )


def test_one_training_step_trains_through_the_soft_token(stage2):
    """The loss reaches the projector only through the soft slot: were the slot looked up by a
    vocabulary id this tokenizer lacks, the projector would get no gradient."""
    model, text_tok, prompts, labels = stage2
    model.train()
    g = torch.Generator().manual_seed(1)
    frames = torch.randn(len(TEXTS), 40, model.former.config.audio_dim, generator=g)
    frame_mask = torch.ones(frames.shape[:2], dtype=torch.bool)
    enc = text_tok(TEXTS, padding=True, return_tensors="pt")
    ids, mask, weights, audio_position = sequences(prompts, TEXTS, labels, [0, 1, 2], 5.0)
    logits = model(
        frames,
        frame_mask,
        enc["input_ids"],
        enc["attention_mask"].bool(),
        ids,
        mask,
        audio_position,
    )
    loss = losses.weighted_lm_loss(logits, ids, weights)
    model.zero_grad()
    loss.backward()
    assert torch.isfinite(loss)
    grads = [p.grad for p in model.projector.parameters()]
    assert all(g is not None for g in grads) and sum(float(g.abs().sum()) for g in grads) > 0
