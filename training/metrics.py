"""WA, UA, WF1 and the confusion matrix (counts, and a PNG drawn with Pillow)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np


def confusion(y_true: Sequence[int], y_pred: Sequence[int], num_classes: int) -> np.ndarray:
    """(true, predicted) counts."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(y_true), np.asarray(y_pred)), 1)
    return matrix


def scores(y_true: Sequence[int], y_pred: Sequence[int], num_classes: int) -> dict[str, float]:
    """WA = accuracy; UA = mean recall over classes present in y_true; WF1 = support-weighted F1."""
    m = confusion(y_true, y_pred, num_classes)
    support = m.sum(axis=1)
    predicted = m.sum(axis=0)
    tp = np.diag(m).astype(float)
    present = support > 0
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    total = support.sum()
    return {
        "wa": float(tp.sum() / total) if total else 0.0,
        "ua": float(recall[present].mean()) if present.any() else 0.0,
        "wf1": float((f1 * support).sum() / total) if total else 0.0,
    }


def confusion_png(matrix: np.ndarray, labels: Sequence[str], path: Path, title: str = "") -> Path:
    """A readable confusion-matrix image: rows true, columns predicted, shade by row share."""
    from PIL import Image, ImageDraw

    n = len(labels)
    cell, left, top = 64, 90, 60
    image = Image.new("RGB", (left + n * cell + 10, top + n * cell + 30), "white")
    draw = ImageDraw.Draw(image)
    draw.text((10, 8), title or "confusion (rows: true, columns: predicted)", fill="black")
    rows = matrix.sum(axis=1, keepdims=True).clip(min=1)
    for i in range(n):
        draw.text((8, top + i * cell + cell // 2 - 6), labels[i][:12], fill="black")
        draw.text((left + i * cell + 6, top - 18), labels[i][:9], fill="black")
        for j in range(n):
            share = matrix[i, j] / rows[i, 0]
            shade = int(255 * (1 - share))
            box = (left + j * cell, top + i * cell, left + (j + 1) * cell, top + (i + 1) * cell)
            draw.rectangle(box, fill=(shade, shade, 255), outline="gray")
            draw.text(
                (box[0] + 22, box[1] + 24),
                str(matrix[i, j]),
                fill="white" if share > 0.5 else "black",
            )
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path
