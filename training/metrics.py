"""WA, UA, WF1 and the confusion matrix (scikit-learn), and a PNG of the matrix (Pillow).

UA is ``balanced_accuracy_score``: the mean recall over the classes present in the truth. It is
not ``recall_score(average="macro", labels=all)``, which counts a class absent from the truth as
recall 0 (a test split without one emotion would be scored down for it)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np


def confusion(y_true: Sequence[int], y_pred: Sequence[int], num_classes: int) -> np.ndarray:
    """(true, predicted) counts over every class of the label set, present or not."""
    from sklearn.metrics import confusion_matrix

    return confusion_matrix(y_true, y_pred, labels=list(range(num_classes))).astype(np.int64)


def scores(y_true: Sequence[int], y_pred: Sequence[int], num_classes: int) -> dict[str, float]:
    """WA = accuracy; UA = balanced accuracy (mean recall over classes present in y_true);
    WF1 = support-weighted F1 over the label set."""
    import warnings

    from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score

    if len(y_true) == 0:
        return {"wa": 0.0, "ua": 0.0, "wf1": 0.0}
    with warnings.catch_warnings():
        # "y_pred contains classes not in y_true": expected when a class is absent from a split.
        warnings.simplefilter("ignore", UserWarning)
        ua = balanced_accuracy_score(y_true, y_pred)
    return {
        "wa": float(accuracy_score(y_true, y_pred)),
        "ua": float(ua),
        "wf1": float(
            f1_score(
                y_true,
                y_pred,
                labels=list(range(num_classes)),
                average="weighted",
                zero_division=0,
            )
        ),
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
