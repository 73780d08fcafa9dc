"""Temperature scaling, ECE and the reliability bins on posteriors whose miscalibration is known,
and the calibrated bundle: same weights, a new version, its temperature on record."""

from __future__ import annotations

import json

import numpy as np
import pytest

from annotator.models.bundle import Bundle, BundleError, with_calibration
from annotator.models.calibration import (
    ece,
    fit_temperature,
    nll,
    reliability,
    reliability_png,
    scaled,
)


def _softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@pytest.fixture(scope="module")
def overconfident():
    """Labels drawn from softmax(z) (so softmax(z) is calibrated), reported as softmax(3z): a
    model three times too sure of itself."""
    rng = np.random.default_rng(0)
    z = rng.normal(0, 1.0, size=(6000, 4))
    truth = _softmax(z)
    y = np.array([rng.choice(4, p=p) for p in truth])
    return _softmax(3 * z), y, truth


def test_fitted_temperature_undoes_a_known_overconfidence(overconfident):
    reported, y, truth = overconfident
    t = fit_temperature(reported, y)
    assert t == pytest.approx(3.0, rel=0.1)
    after = scaled(reported, t)
    assert ece(reported, y) > 0.1
    assert ece(after, y) < 0.03
    assert ece(after, y) == pytest.approx(ece(truth, y), abs=0.02)
    assert nll(after, y) < nll(reported, y)
    assert (after.argmax(axis=1) == reported.argmax(axis=1)).all()  # T never changes a label


def test_scaling_composes_and_one_changes_nothing(overconfident):
    reported, _, _ = overconfident
    np.testing.assert_allclose(scaled(scaled(reported, 2.0), 1.5), scaled(reported, 3.0), atol=1e-9)
    np.testing.assert_allclose(scaled(scaled(reported, 4.0), 0.25), reported, atol=1e-9)
    assert scaled(reported, 1.0) is not None
    np.testing.assert_allclose(scaled(reported, 1.0), reported)
    with pytest.raises(ValueError):
        scaled(reported, 0.0)


def test_reliability_bins_cover_every_example(overconfident, tmp_path):
    reported, y, _ = overconfident
    rows = reliability(reported, y)
    assert sum(r["n"] for r in rows) == len(y)
    assert rows[0]["low"] == 0.0 and rows[-1]["high"] == 1.0
    # A confidence of exactly 1 lands in the last bin, not past it.
    certain = np.array([[1.0, 0.0, 0.0, 0.0]])
    assert reliability(certain, [0])[-1]["n"] == 1 and ece(certain, [0]) == 0.0
    assert ece(certain, [1]) == 1.0
    path = reliability_png(
        {"before": rows, "after": reliability(scaled(reported, 3), y)}, tmp_path / "r.png"
    )
    assert path.stat().st_size > 1000


def test_calibrated_bundle_is_a_new_version_with_the_same_weights(small_dir, tmp_path):
    bundle = Bundle.load(small_dir / "bundle")
    assert bundle.temperature == 1.0
    calibrated = with_calibration(bundle, tmp_path / "cal", {"temperature": 2.5, "fitted_on": 10})
    assert calibrated.temperature == 2.5
    assert calibrated.version != bundle.version
    assert calibrated.labels == bundle.labels
    for name in ("emoq_former.safetensors", "lora/adapter_model.safetensors"):
        assert (calibrated.root / name).read_bytes() == (bundle.root / name).read_bytes()
    meta = json.loads((calibrated.root / "bundle.json").read_text())
    assert meta["extra"]["calibration"]["fitted_on"] == 10
    with pytest.raises(BundleError, match="exists"):
        with_calibration(bundle, tmp_path / "cal", {"temperature": 2.0})
    with pytest.raises(BundleError, match="positive"):
        with_calibration(bundle, tmp_path / "other", {"temperature": 0})
    assert not (tmp_path / "other").exists()
