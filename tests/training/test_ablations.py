"""The paper's ablations as settings of the same commands (annotator/kinds/emoq/ablations.py): what each
changes in training, and that a bundle trained on one input is served hearing only that one."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from annotator.config import ConfigError, load_config
from annotator.kinds.emoq.ablations import ABLATIONS, ablated
from annotator.models.bundle import Bundle, heard
from training import losses


def test_each_ablation_is_a_train_setting_and_unknown_ones_are_refused():
    config = load_config(None)
    assert ablated(config, None) is config
    assert ablated(config, "audio-only").train.inputs == "audio"
    assert ablated(config, "text-only").train.inputs == "text"
    assert ablated(config, "supcon-only").train.stage1_loss == "supcon"
    assert ablated(config, "focal-only").train.stage1_loss == "focal"
    assert ablated(config, "no-stage1").train.epochs_stage1 == 0
    for name in ABLATIONS:  # only train changes
        assert ablated(config, name).models == config.models
    with pytest.raises(ConfigError, match="unknown ablation"):
        ablated(config, "no-audio")


def test_stage1_loss_alone_is_each_term_of_mal():
    g = torch.Generator().manual_seed(0)
    e = torch.nn.functional.normalize(torch.randn(8, 16, generator=g), dim=-1)
    logits = torch.randn(8, 4, generator=g)
    y = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
    supcon = losses.stage1_loss("supcon", e, logits, y)
    focal = losses.stage1_loss("focal", e, logits, y)
    assert supcon == losses.supervised_contrastive(e, y, 0.07)
    assert focal == losses.focal(logits, y, 2.0)
    assert losses.stage1_loss("mal", e, logits, y, lam=0.5) == pytest.approx(supcon + 0.5 * focal)
    with pytest.raises(ValueError, match="stage1_loss"):
        losses.stage1_loss("ce", e, logits, y)


def test_heard_takes_the_other_input_away():
    waves = [np.ones(160, np.float32), np.ones(320, np.float32)]
    texts = ["so angry", "so sad"]
    assert heard("both", waves, texts) == (waves, texts)
    a_waves, a_texts = heard("audio", waves, texts)
    assert a_texts == ["", ""] and all(
        np.array_equal(a, b) for a, b in zip(a_waves, waves, strict=True)
    )
    t_waves, t_texts = heard("text", waves, texts)
    assert t_texts == texts and [w.shape for w in t_waves] == [(160,), (320,)]
    assert not any(w.any() for w in t_waves)


@pytest.fixture(scope="module")
def embedder_for(small_dir):
    from annotator.kinds.emoq.embedder import EmotionEmbedder

    bundle = Bundle.load(small_dir / "bundle")

    def make(inputs: str):
        trained_on = dataclasses.replace(bundle, extra={**bundle.extra, "inputs": inputs})
        return EmotionEmbedder(trained_on, str(small_dir / "hubert"))

    return make


def test_a_bundle_trained_on_one_input_is_served_that_input_only(embedder_for, small_dir):
    """The same bundle weights, recorded as trained on audio only (text only): changing the
    transcript (the audio) no longer moves e, while the other input still does."""
    from annotator.models.prompt import PromptEmbedder

    rng = np.random.default_rng(2)
    wave, other = (rng.standard_normal(16000).astype(np.float32) * 0.1 for _ in range(2))
    texts = ["I am so happy today", "I am so angry today", "I am so happy today"]
    with torch.no_grad():
        e_audio, _ = embedder_for("audio")([wave, wave, other], texts)
        e_text, _ = embedder_for("text")([wave, wave, other], texts)
    assert (e_audio[1] - e_audio[0]).abs().max() < 1e-6  # transcript not heard
    assert (e_audio[2] - e_audio[0]).abs().max() > 1e-3  # audio heard
    assert (e_text[2] - e_text[0]).abs().max() < 1e-6  # audio not heard
    assert (e_text[1] - e_text[0]).abs().max() > 1e-3  # transcript heard
    # The prompt of an audio-only bundle carries no transcript either.
    bundle = Bundle.load(small_dir / "bundle")
    args = (small_dir / "llm", bundle.labels, bundle.text_tokenizer_dir)
    deaf = PromptEmbedder.from_llm(*args, inputs="audio")
    full = PromptEmbedder.from_llm(*args)
    assert deaf.prompt(texts[0]).ids == deaf.prompt(texts[1]).ids == full.prompt("").ids
    assert full.prompt(texts[0]).ids != full.prompt(texts[1]).ids


def test_no_stage1_writes_the_initialised_emoq_former(small_home, tmp_path):
    """epochs_stage1 0: no Ray Train run; the EmoQ-Former stage 2 starts from is the seeded
    initialisation, the same each time."""
    from safetensors.torch import load_file

    from annotator.kinds.emoq.emoq_former import EmoQFormer
    from annotator.kinds.emoq.stage1 import train_stage1

    config = ablated(load_config(None, models={"home": str(small_home)}), "no-stage1")
    first = train_stage1(config, tmp_path / "none.jsonl", tmp_path / "a")
    second = train_stage1(config, tmp_path / "none.jsonl", tmp_path / "b")
    EmoQFormer.load(first)
    a = load_file(first / "emoq_former.safetensors")
    b = load_file(second / "emoq_former.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
