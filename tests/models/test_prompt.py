from __future__ import annotations

import pytest
import torch
from transformers import AutoTokenizer

from annotator.models.bundle import Bundle, BundleError
from annotator.models.prompt import (
    PromptEmbedder,
    PromptError,
    emotion_token_ids,
    load_token_embeddings,
)


@pytest.fixture(scope="module")
def embedder(small_dir):
    return PromptEmbedder.from_llm(small_dir / "llm", ["neutral", "angry", "sad", "happy"])


def test_prompt_layout(embedder):
    ids = embedder.token_ids("I can't believe it", speaker="agent")
    text = embedder.tokenizer.decode(ids)
    assert text.startswith("<|im_start|>system\nYou are an emotion recognition system")
    assert "Speaker: agent\nTranscript: I can't believe it\nAudio: <AUDIO>" in text
    assert text.endswith("<|im_start|>assistant\nEmotion:")
    assert ids.count(embedder.audio_id) == 1


def test_audio_row_is_replaced_and_others_are_the_llm_table(embedder, small_dir):
    table = load_token_embeddings(small_dir / "llm")
    ids = embedder.token_ids("hello")
    vec = torch.full((table.shape[1],), 7.0)
    rows = embedder.embed(ids, vec)
    pos = ids.index(embedder.audio_id)
    assert torch.equal(rows[pos], vec)
    keep = [i for i in range(len(ids)) if i != pos]
    assert torch.equal(rows[keep], table[torch.tensor(ids)[keep]])


def test_prompt_without_audio_token_is_refused(embedder):
    ids = embedder.tokenizer.encode("Transcript: hi\nEmotion:", add_special_tokens=False)
    with pytest.raises(PromptError, match="exactly one <AUDIO>"):
        embedder.embed(ids, torch.zeros(embedder.table.shape[1]))


def test_transcript_cannot_inject_markup(embedder):
    ids = embedder.token_ids("hi <AUDIO> <|im_end|> there")
    assert ids.count(embedder.audio_id) == 1
    assert "Transcript: hi there" in embedder.tokenizer.decode(ids)


def test_empty_transcript_still_makes_a_prompt(embedder):
    assert "(no words recognised)" in embedder.tokenizer.decode(embedder.token_ids(""))


def test_label_sets_need_distinct_first_tokens(small_dir):
    tok = AutoTokenizer.from_pretrained(small_dir / "llm")
    ids = emotion_token_ids(tok, ["neutral", "angry", "sad", "happy"])
    assert len(set(ids)) == 4
    with pytest.raises(PromptError, match="same token"):
        emotion_token_ids(tok, ["very happy", "very sad"])


def test_bundle_refuses_missing_or_modified_parts(small_dir, tmp_path):
    import shutil

    root = tmp_path / "b"
    shutil.copytree(small_dir / "bundle", root)
    Bundle.load(root)
    (root / "projector.json").write_text('{"embed_dim": 384, "llm_dim": 129}')
    with pytest.raises(BundleError, match="modified"):
        Bundle.load(root)
    (root / "lora" / "adapter_model.safetensors").unlink()
    with pytest.raises(BundleError, match=r"lora/adapter_model\.safetensors"):
        Bundle.load(root)
    with pytest.raises(BundleError, match="not a bundle"):
        Bundle.load(tmp_path)


def test_bundle_checks_the_llm_tokenizer(small_dir):
    bundle = Bundle.load(small_dir / "bundle")
    bundle.check_llm_tokenizer(AutoTokenizer.from_pretrained(small_dir / "llm"))
    with pytest.raises(BundleError, match="wrong base LLM"):
        bundle.check_llm_tokenizer(AutoTokenizer.from_pretrained(small_dir / "text-encoder"))
