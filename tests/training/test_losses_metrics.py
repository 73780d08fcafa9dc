"""Losses against values worked out by hand; metrics against scikit-learn."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from training import losses
from training.metrics import confusion, confusion_png, scores


def test_supervised_contrastive_by_hand():
    e = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    y = torch.tensor([0, 0, 1])
    # Anchors 1 and 2: one positive each, log p = 1 − log(e¹ + e⁰); anchor 3 has no positive.
    expected = math.log(1 + math.e) - 1
    assert losses.supervised_contrastive(e, y, temperature=1.0).item() == pytest.approx(expected)
    # τ scales the similarities: at τ = 0.5 the positive's logit is 2.
    expected = math.log(math.exp(2) + 1) - 2
    assert losses.supervised_contrastive(e, y, 0.5).item() == pytest.approx(expected, rel=1e-6)


def test_supcon_without_positives_is_zero_and_differentiable():
    e = torch.nn.functional.normalize(torch.randn(3, 4, requires_grad=True), dim=-1)
    loss = losses.supervised_contrastive(e, torch.tensor([0, 1, 2]))
    loss.backward()
    assert loss.item() == 0.0


def test_focal_with_class_weights_by_hand():
    logits = torch.tensor([[0.0, 0.0], [math.log(3), 0.0]])
    y = torch.tensor([0, 0])
    row1 = -(0.5**2) * math.log(0.5)  # p = 0.5
    row2 = -(0.25**2) * math.log(0.75)  # p = 0.75
    assert losses.focal(logits, y, gamma=2).item() == pytest.approx((row1 + row2) / 2)
    weights = torch.tensor([2.0, 1.0])
    assert losses.focal(logits, y, 2, weights).item() == pytest.approx(row1 + row2)
    # γ = 0 is plain (weighted) cross-entropy.
    assert losses.focal(logits, y, 0).item() == pytest.approx((math.log(2) - math.log(0.75)) / 2)


def test_class_weights_are_inverse_frequency_with_mean_one():
    w = losses.class_weights([0, 0, 0, 1], 3)
    assert w.tolist() == pytest.approx([0.5, 1.5, 0.0])


def test_mal_is_supcon_plus_lambda_focal():
    e = torch.nn.functional.normalize(torch.randn(6, 5), dim=-1)
    logits, y = torch.randn(6, 3), torch.tensor([0, 0, 1, 1, 2, 2])
    expected = losses.supervised_contrastive(e, y, 0.07) + 0.5 * losses.focal(logits, y, 2.0)
    assert losses.mal(e, logits, y, 0.07, 2.0, 0.5).item() == pytest.approx(expected.item())


def test_weighted_lm_loss_by_hand():
    logits = torch.tensor([[[0.0, 0.0], [math.log(3), 0.0], [5.0, -5.0]]])
    targets = torch.tensor([[7, 1, 0]])  # position 0 is the prompt: never a target
    weights = torch.tensor([[0.0, 1.0, 3.0]])
    expected = (1 * math.log(2) + 3 * -math.log(0.75)) / 4
    assert losses.weighted_lm_loss(logits, targets, weights).item() == pytest.approx(expected)


def test_metrics_equal_scikit_learn(tmp_path):
    from sklearn.metrics import accuracy_score, f1_score, recall_score

    rng = np.random.default_rng(0)
    y_true, y_pred = rng.integers(0, 4, 200), rng.integers(0, 4, 200)
    got = scores(y_true, y_pred, 4)
    assert got["wa"] == pytest.approx(accuracy_score(y_true, y_pred))
    assert got["ua"] == pytest.approx(recall_score(y_true, y_pred, average="macro"))  # all present
    assert got["wf1"] == pytest.approx(f1_score(y_true, y_pred, average="weighted"))
    matrix = confusion(y_true, y_pred, 4)
    assert matrix.sum() == 200 and matrix[1, 2] == np.sum((y_true == 1) & (y_pred == 2))
    png = confusion_png(matrix, ["neutral", "angry", "sad", "happy"], tmp_path / "c.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_ua_with_a_class_absent_from_the_truth():
    """A split without "sad" (class 2), though the model predicts it once: UA is the mean recall
    over the three classes present, by hand (1, 1/2, 1) → 5/6; macro recall over all four labels
    would count sad as 0 and give 5/8."""
    y_true = [0, 0, 1, 1, 3, 3]
    y_pred = [0, 0, 1, 2, 3, 3]
    got = scores(y_true, y_pred, 4)
    assert got["ua"] == pytest.approx(5 / 6)
    assert got["wa"] == pytest.approx(5 / 6)
    assert confusion(y_true, y_pred, 4).shape == (4, 4)
    assert confusion(y_true, y_pred, 4)[2].sum() == 0
