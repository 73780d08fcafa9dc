"""Stage 2 places the soft token by the position its prompt recorded, exactly where serving does,
with an LLM tokenizer that has no <AUDIO> token (the small one, like Qwen2.5-Instruct's)."""

from __future__ import annotations

import pytest
import torch

from annotator.config import load_config
from annotator.kinds.emoq.stage2 import build
from annotator.models.bundle import Bundle
from annotator.models.prompt import PromptEmbedder
from training import losses
from training.llm import sequences

LONG = " ".join(["and then they put me on hold again for another forty minutes"] * 30)
TEXTS = ["hi", "", "I can't believe you did that to me again, after everything <AUDIO>", LONG]
SPEAKERS = ["customer", "", None, "agent"]


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
    different lengths) the same embedding rows as LabelStage's PromptEmbedder gives, speaker
    included; a transcript longer than the EmoQ-Former reads is cut the same way in both, and
    the EmoQ-Former's ids are the features stage's."""
    from annotator.kinds.emoq.embedder import EmotionEmbedder
    from annotator.models.transcript import MAX_TEXT_TOKENS

    model, transcripts, prompts, labels = stage2
    bundle = Bundle.load(small_dir / "bundle")
    served = PromptEmbedder.from_llm(small_dir / "llm", labels, bundle.text_tokenizer_dir)
    ids, mask, _, audio_position = sequences(prompts, TEXTS, labels, [0, 1, 2, 3], 5.0, SPEAKERS)
    assert len({int(m.sum()) for m in mask}) == len(TEXTS)  # really padded
    soft = torch.randn(
        len(TEXTS), served.table.shape[1], generator=torch.Generator().manual_seed(0)
    )
    with torch.no_grad():
        trained = model.prompt_embeds(ids, audio_position, soft)
    for k, text in enumerate(TEXTS):
        prompt = served.prompt(text, SPEAKERS[k])
        assert ids[k, : len(prompt)].tolist() == list(prompt.ids)
        assert int(audio_position[k]) == prompt.audio_position
        torch.testing.assert_close(
            trained[k, : len(prompt)],
            served.build(text, soft[k], speaker=SPEAKERS[k]),
            rtol=0,
            atol=0,
        )
    # The speaker is in the prompt where known; the long transcript is cut, not carried whole.
    decoded = [
        served.tokenizer.decode(served.prompt(t, s).ids)
        for t, s in zip(TEXTS, SPEAKERS, strict=True)
    ]
    assert "Speaker: customer" in decoded[0] and "Speaker:" not in decoded[1]
    assert LONG not in decoded[3] and transcripts.cut(LONG) in decoded[3]
    train_ids, train_mask = transcripts(TEXTS)
    assert train_mask.sum(dim=1).max() == MAX_TEXT_TOKENS
    embedder = EmotionEmbedder(bundle, str(small_dir / "hubert"))
    serve_ids, serve_mask = embedder.transcripts(TEXTS)
    assert torch.equal(train_ids, serve_ids) and torch.equal(train_mask, serve_mask)


def test_one_training_step_trains_through_the_soft_token(stage2):
    """The loss reaches the projector only through the soft slot: were the slot looked up by a
    vocabulary id this tokenizer lacks, the projector would get no gradient."""
    model, transcripts, prompts, labels = stage2
    model.train()
    g = torch.Generator().manual_seed(1)
    frames = torch.randn(len(TEXTS), 40, model.former.config.audio_dim, generator=g)
    frame_mask = torch.ones(frames.shape[:2], dtype=torch.bool)
    text_ids, text_mask = transcripts(TEXTS)
    ids, mask, weights, audio_position = sequences(prompts, TEXTS, labels, [0, 1, 2, 3], 5.0)
    logits = model(
        frames,
        frame_mask,
        text_ids,
        text_mask,
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


@pytest.fixture(scope="module")
def llama3_tokenizer(small_dir, tmp_path_factory):
    """A tokenizer shaped like Llama 3.2-Instruct's (EmoSLLM's paper LLM): <|eot_id|>, no
    <|im_end|>, no pad token."""
    from transformers import AutoTokenizer

    from annotator.models.tokenizer_layouts import build_llama3_tokenizer

    root = tmp_path_factory.mktemp("llama3-tokenizer")
    build_llama3_tokenizer(root, small_dir / "whisper")
    return AutoTokenizer.from_pretrained(root)


@pytest.mark.parametrize("llm", ["qwen", "llama3"])
def test_answers_end_with_the_end_of_turn_of_the_served_chat_template(
    llm, stage2, llama3_tokenizer
):
    """Each trained answer is the served prompt, the label's word and then the token the LLM's
    own chat template closes an assistant turn with: <|im_end|> for Qwen's, <|eot_id|> for
    Llama 3's, which has no <|im_end|> at all."""
    from annotator.models.prompt import end_of_turn_id

    _, _, qwen_prompts, labels = stage2
    if llm == "qwen":
        prompts, end = qwen_prompts, "<|im_end|>"
    else:
        table = torch.zeros(len(llama3_tokenizer), 8)
        prompts, end = PromptEmbedder(llama3_tokenizer, table, labels), "<|eot_id|>"
        assert llama3_tokenizer.convert_tokens_to_ids("<|im_end|>") is None
        assert llama3_tokenizer.pad_token_id is None
    tok = prompts.tokenizer
    assert end_of_turn_id(tok) == tok.convert_tokens_to_ids(end)
    texts, speakers = TEXTS[:3], SPEAKERS[:3]
    ids, mask, weights, _ = sequences(prompts, texts, labels, [0, 1, 2], 5.0, speakers)
    for k, (text, speaker) in enumerate(zip(texts, speakers, strict=True)):
        prompt = prompts.prompt(text, speaker)
        word = tok.encode(" " + labels[k], add_special_tokens=False)
        row = ids[k, : int(mask[k].sum())].tolist()
        assert row == [*prompt.ids, *word, tok.convert_tokens_to_ids(end)]
        assert weights[k, len(prompt) + len(word)] == 1.0  # the model learns to stop there
    rendered = tok.apply_chat_template(
        [{"role": "user", "content": "x"}, {"role": "assistant", "content": "Emotion: sad"}],
        tokenize=False,
    )
    assert rendered.split("Emotion: sad", 1)[1].startswith(end)
