"""``annotator calibrate``: fit a bundle's posterior temperature on one split and check it on
another, both scored as served; write the calibrated bundle (same weights, new version) and the
evidence (ECE and NLL before and after, the reliability diagram).

Fit on a split the model was not trained on (MELD's dev, a held-out voice or session, reviewed
calls); check on a different one, or the figures only show the fit.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from annotator.config import AnnotatorConfig
from annotator.models.calibration import (
    coverage_at,
    ece,
    fit_temperature,
    nll,
    reliability,
    reliability_png,
    scaled,
    threshold_for,
)
from training.data import Example

THRESHOLDS = (0.5, 0.7, 0.9)  # the coverage/accuracy figures reported at each


def calibrate(
    config: AnnotatorConfig,
    bundle_dir: Path,
    fit: Sequence[Example],
    check: Sequence[Example],
    out: Path,
    report: Path | None = None,
    labeler=None,
    coverage: float | None = None,
) -> dict[str, Any]:
    """Fit T on ``fit``, measure on ``check`` (one evaluation actor scores both, or ``labeler``,
    a VLLMLabeler serving this bundle, in this process), write the calibrated bundle to ``out``
    and, with ``report``, ``calibration.json`` and ``reliability.png`` there. With ``coverage``,
    the bundle also carries the abstention threshold that labels that share of the check (else
    fit) split once calibrated: serving writes ``unsure`` under it. Returns the figures."""
    from annotator.models.bundle import Bundle, with_calibration
    from annotator.models.locate import locate
    from training.common import model_path
    from training.evaluate import evaluate, evaluate_bundles_on_ray

    location = locate(str(bundle_dir), config.models, config.s3)  # where the actor fetches it
    bundle = Bundle.load(model_path(location, config))
    if not fit:
        raise ValueError("no examples to fit the temperature on")
    jobs = [(location, list(fit))] + ([(location, list(check))] if check else [])
    if labeler is None:
        results = evaluate_bundles_on_ray(config, jobs)
    else:
        results = [evaluate(config, bundle.root, part, None, labeler) for _, part in jobs]
    # Served posteriors carry the bundle's own temperature; T₁ then T₂ is T₁·T₂, so dividing it
    # out gives the raw posterior (a calibrated bundle is refitted from scratch).
    raw = [scaled(np.asarray(r["posteriors"]), 1 / bundle.temperature) for r in results]
    truth = [[bundle.labels.index(e.label) for e in part] for _, part in jobs]
    temperature = fit_temperature(raw[0], truth[0])
    figures: dict[str, Any] = {"temperature": temperature, "bundle": bundle.version}
    curves = {}
    for name, probs, y in zip(("fit", "check"), raw, truth, strict=False):
        after = scaled(probs, temperature)
        figures[name] = {
            "examples": len(y),
            "ece_before": ece(probs, y),
            "ece_after": ece(after, y),
            "nll_before": nll(probs, y),
            "nll_after": nll(after, y),
            "accuracy": float(np.mean(probs.argmax(axis=1) == np.asarray(y))),
            "coverage_before": [coverage_at(probs, y, t) for t in THRESHOLDS],
            "coverage_after": [coverage_at(after, y, t) for t in THRESHOLDS],
        }
        if name == "check" or not check:
            curves = {
                "before (T 1)": reliability(probs, y),
                f"after (T {temperature:.2f})": reliability(after, y),
            }
    shown = len(raw) - 1  # the check split if there is one, else the fit split
    record = {
        "temperature": temperature,
        "fitted_on": figures["fit"]["examples"],
        "ece_before": figures["check" if check else "fit"]["ece_before"],
        "ece_after": figures["check" if check else "fit"]["ece_after"],
    }
    if coverage is not None:
        after = scaled(raw[shown], temperature)
        record["unsure_below"] = threshold_for(after, coverage)
        record["coverage"] = coverage_at(after, truth[shown], record["unsure_below"])
        figures["unsure_below"] = record["unsure_below"]
        figures["coverage"] = record["coverage"]
    calibrated = with_calibration(bundle, out, record)
    figures["calibrated_bundle"] = calibrated.version
    if report is not None:
        report.mkdir(parents=True, exist_ok=True)
        (report / "calibration.json").write_text(
            json.dumps({**figures, "curves": curves}, indent=2)
        )
        split = figures["check" if check else "fit"]
        reliability_png(
            curves,
            report / "reliability.png",
            f"ECE {split['ece_before']:.3f} -> {split['ece_after']:.3f} "
            f"({'check' if check else 'fit'} split, {split['examples']} examples)",
        )
    return figures
