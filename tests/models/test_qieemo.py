"""Qieemo (annotator/kinds/qieemo/model.py) over the small profile's random HuBERT CTC encoder: every
path of the model is wired, padding never reaches a segment's posterior, and a bundle round-trips."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from annotator.audio.synth import speak
from annotator.kinds.qieemo.model import CTCEncoder, Qieemo, upper_blocks
from annotator.models.bundle import Bundle


@pytest.fixture(scope="module")
def parts(small_dir):
    bundle = Bundle.load(small_dir / "qieemo-bundle")
    encoder = CTCEncoder(str(small_dir / "ctc"))
    return bundle, encoder, Qieemo.load(bundle.root)


@pytest.fixture(scope="module")
def speech():
    return [speak("I am so happy today"), speak("leave me alone", voice="en-gb")]


def test_blocks_fused_are_the_papers_upper_half():
    assert upper_blocks(12) == [7, 8, 9, 10, 11, 12]  # the paper: blocks 7-12 of 12
    assert upper_blocks(24) == [13, 15, 17, 20, 22, 24]
    assert upper_blocks(4) == [3, 4]


def test_a_padded_batch_gives_each_segment_its_own_posterior(parts, speech):
    _, encoder, model = parts
    assert len(speech[0]) != len(speech[1])
    together = model(*encoder(speech))
    for k, wave in enumerate(speech):
        alone = model(*encoder([wave]))
        torch.testing.assert_close(together[k : k + 1], alone, atol=1e-5, rtol=1e-4)


def test_every_part_of_the_model_is_on_the_path_to_the_label(parts, speech):
    """One backward pass: each trainable tensor (block weights, Conv2D, fusion, the phonetic
    projection, the cross-modal attention, pooling, classifier) gets a gradient."""
    bundle, encoder, _ = parts
    model = Qieemo.load(bundle.root).train()
    hidden, logits, mask = encoder(speech)
    loss = torch.nn.functional.cross_entropy(model(hidden, logits, mask), torch.tensor([3, 1]))
    loss.backward()
    silent = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum()]
    assert not silent


def test_the_posterior_depends_on_the_audio_and_on_the_phonetic_posteriors(parts, speech):
    _, encoder, model = parts
    hidden, logits, mask = encoder(speech)
    base = model(hidden, logits, mask)
    other = model(*encoder([speech[1], speech[0]]))
    assert not torch.allclose(base[0], other[0], atol=1e-4)
    flat = model(hidden, torch.zeros_like(logits), mask)  # uniform phonetic posteriors
    assert not torch.allclose(base, flat, atol=1e-4)


def test_the_bundle_names_its_kind_encoder_and_labels(parts, tmp_path):
    bundle, encoder, model = parts
    assert bundle.kind == "qieemo" and bundle.base == {"ctc_encoder": "small:ctc"}
    assert bundle.labels == model.config.labels and model.config.vocab == encoder.vocab
    model.save(tmp_path)
    again = Qieemo.load(tmp_path)
    x = encoder([np.asarray(speak("fine thanks"))])
    torch.testing.assert_close(model(*x), again(*x))
