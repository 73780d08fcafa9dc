"""Confidence that means something: temperature scaling of the emotion posterior (Guo et al.,
"On Calibration of Modern Neural Networks", 2017), and how to tell whether it holds — the expected
calibration error (ECE) and a reliability diagram.

The label stage's posterior is a softmax over the labels' first-token logits, so scaling its log
by 1/T and renormalising is scaling those logits: one scalar, fitted on a held-out split by
minimising the negative log-likelihood, that never changes which label is chosen. A bundle
carries its T (``Bundle.temperature``, 1 when uncalibrated); serving and ``annotator eval``
apply it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

BINS = 15  # equal-width confidence bins, as Guo et al.


def scaled(probs: np.ndarray, temperature: float) -> np.ndarray:
    """``probs`` (n, labels) with their logits divided by ``temperature``, renormalised."""
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, not {temperature}")
    probs = np.asarray(probs, dtype=np.float64)
    if temperature == 1.0:
        return probs
    logits = np.log(np.clip(probs, 1e-300, None)) / temperature
    logits -= logits.max(axis=1, keepdims=True)
    out = np.exp(logits)
    return out / out.sum(axis=1, keepdims=True)


def nll(probs: np.ndarray, y_true: Sequence[int]) -> float:
    """Mean negative log-likelihood of the true labels."""
    probs = np.asarray(probs, dtype=np.float64)
    return float(-np.mean(np.log(np.clip(probs[np.arange(len(probs)), y_true], 1e-300, None))))


def fit_temperature(probs: np.ndarray, y_true: Sequence[int]) -> float:
    """The T in [1/20, 20] that minimises the NLL of ``y_true`` under ``scaled(probs, T)``."""
    from scipy.optimize import minimize_scalar

    if len(y_true) == 0:
        raise ValueError("no examples to fit a temperature on")
    y = np.asarray(y_true)
    found = minimize_scalar(
        lambda log_t: nll(scaled(probs, float(np.exp(log_t))), y),
        bounds=(np.log(1 / 20), np.log(20)),
        method="bounded",
        options={"xatol": 1e-4},
    )
    return float(np.exp(found.x))


def reliability(probs: np.ndarray, y_true: Sequence[int], bins: int = BINS) -> list[dict]:
    """Per equal-width confidence bin (of the chosen label's probability): its range, how many
    examples fell in it, their accuracy and mean confidence."""
    probs = np.asarray(probs, dtype=np.float64)
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == np.asarray(y_true)
    edges = np.linspace(0.0, 1.0, bins + 1)
    # A confidence of exactly 1.0 belongs to the last bin.
    which = np.minimum(np.searchsorted(edges, confidence, side="right") - 1, bins - 1)
    rows = []
    for b in range(bins):
        mask = which == b
        n = int(mask.sum())
        rows.append(
            {
                "low": float(edges[b]),
                "high": float(edges[b + 1]),
                "n": n,
                "accuracy": float(correct[mask].mean()) if n else None,
                "confidence": float(confidence[mask].mean()) if n else None,
            }
        )
    return rows


def ece(probs: np.ndarray, y_true: Sequence[int], bins: int = BINS) -> float:
    """Expected calibration error: Σ_b (n_b / n) · |accuracy_b − confidence_b|."""
    rows = reliability(probs, y_true, bins)
    total = sum(r["n"] for r in rows)
    if not total:
        return 0.0
    return float(sum(r["n"] * abs(r["accuracy"] - r["confidence"]) for r in rows if r["n"]) / total)


def coverage_at(probs: np.ndarray, y_true: Sequence[int], threshold: float) -> dict[str, Any]:
    """Abstaining under ``threshold``: the share of examples still labelled (coverage) and the
    accuracy on them (None if none is left)."""
    probs = np.asarray(probs, dtype=np.float64)
    kept = probs.max(axis=1) >= threshold
    right = probs.argmax(axis=1) == np.asarray(y_true)
    return {
        "threshold": float(threshold),
        "coverage": float(kept.mean()) if len(kept) else 0.0,
        "accuracy": float(right[kept].mean()) if kept.any() else None,
    }


def threshold_for(probs: np.ndarray, coverage: float) -> float:
    """The highest confidence threshold that still labels at least ``coverage`` of ``probs``."""
    if not 0 < coverage <= 1:
        raise ValueError(f"coverage must be in (0, 1], not {coverage}")
    confidence = np.sort(np.asarray(probs, dtype=np.float64).max(axis=1))[::-1]
    keep = int(np.ceil(coverage * len(confidence)))
    return float(confidence[max(keep, 1) - 1])


def reliability_png(curves: Mapping[str, list[dict]], path: Path, title: str = "") -> Path:
    """Reliability diagram (Pillow): per curve, each non-empty bin's accuracy against its mean
    confidence, over the diagonal of perfect calibration."""
    from PIL import Image, ImageDraw

    size, pad = 360, 50
    image = Image.new("RGB", (size + 2 * pad + 140, size + 2 * pad), "white")
    draw = ImageDraw.Draw(image)
    draw.text((pad, 12), title or "reliability: accuracy against confidence", fill="black")

    def at(x: float, y: float) -> tuple[float, float]:
        return pad + x * size, pad + (1 - y) * size

    draw.rectangle((*at(0, 1), *at(1, 0)), outline="gray")
    draw.line((*at(0, 0), *at(1, 1)), fill="lightgray", width=1)
    for tick in (0.0, 0.5, 1.0):
        draw.text((at(tick, 0)[0] - 8, at(tick, 0)[1] + 6), f"{tick:.1f}", fill="black")
        draw.text((pad - 30, at(0, tick)[1] - 6), f"{tick:.1f}", fill="black")
    colours = ["#d62728", "#1f77b4", "#2ca02c", "#9467bd"]
    for k, (name, rows) in enumerate(curves.items()):
        colour = colours[k % len(colours)]
        points = [at(r["confidence"], r["accuracy"]) for r in rows if r["n"]]
        if len(points) > 1:
            draw.line(points, fill=colour, width=2)
        for x, y in points:
            draw.ellipse((x - 3, y - 3, x + 3, y + 3), fill=colour)
        draw.text((pad + size + 16, pad + 16 * k), name, fill=colour)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path
