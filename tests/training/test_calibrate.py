"""``annotator calibrate`` on a served bundle: T fitted on one split of the synthetic corpus,
measured on another, and the calibrated bundle served with exactly that T."""

from __future__ import annotations

import json

import numpy as np
import pytest

from annotator.config import load_config
from training.data import read_manifest

pytestmark = pytest.mark.vllm


def test_calibrated_bundle_serves_the_fitted_temperature(
    small_home, lora_bundle, vllm_labeler, synth_manifest, tmp_path
):
    from annotator.models.bundle import Bundle
    from training.calibrate import calibrate
    from training.evaluate import evaluate

    config = load_config(None, models={"home": str(small_home)})
    held_out = [e for e in read_manifest(synth_manifest) if e.split == "test"]
    voices = sorted({e.speaker for e in held_out})
    fit = [e for e in held_out if e.speaker == voices[0]]
    check = [e for e in held_out if e.speaker == voices[1]]
    figures = calibrate(
        config,
        lora_bundle,
        fit,
        check,
        tmp_path / "cal",
        tmp_path / "report",
        vllm_labeler,
        coverage=0.5,
    )
    calibrated = Bundle.load(tmp_path / "cal")
    assert calibrated.temperature == pytest.approx(figures["temperature"])
    assert figures["fit"]["nll_after"] <= figures["fit"]["nll_before"] + 1e-9
    # Served, the calibrated bundle shows on the check voice exactly the figures calibrate
    # predicted from the raw posteriors.
    served = evaluate(config, calibrated.root, check, None, vllm_labeler)
    assert served["temperature"] == pytest.approx(figures["temperature"])
    assert served["ece"] == pytest.approx(figures["check"]["ece_after"], abs=1e-6)
    assert served["nll"] == pytest.approx(figures["check"]["nll_after"], abs=1e-5)
    raw = evaluate(config, lora_bundle, check, None, vllm_labeler)
    assert raw["ece"] == pytest.approx(figures["check"]["ece_before"], abs=1e-6)
    assert raw["confusion"] == served["confusion"]  # T never changes a label
    report = json.loads((tmp_path / "report" / "calibration.json").read_text())
    assert report["temperature"] == figures["temperature"]
    assert sum(b["n"] for b in report["curves"]["before (T 1)"]) == len(check)
    assert (tmp_path / "report" / "reliability.png").is_file()
    print(
        f"T {figures['temperature']:.2f}: ECE {figures['check']['ece_before']:.3f} -> "
        f"{figures['check']['ece_after']:.3f} on {len(check)} clips"
    )
    assert np.isfinite(figures["temperature"])
    # Abstention for a coverage of one half: the threshold labels at least half of the check
    # voice (the served confidences), and the bundle carries it.
    assert calibrated.unsure_below == pytest.approx(figures["unsure_below"])
    kept = np.asarray(served["posteriors"]).max(axis=1) >= figures["unsure_below"]
    assert kept.mean() >= 0.5 and figures["coverage"]["coverage"] == pytest.approx(kept.mean())
    assert [row["threshold"] for row in figures["check"]["coverage_after"]] == [0.5, 0.7, 0.9]
