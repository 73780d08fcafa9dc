"""Label Studio's JSON formats, as its documentation gives them.

Import (``tasks.json``): a list of tasks, each ``{"data": {...}, "predictions": [{"model_version",
"score", "result": [{"from_name", "to_name", "type": "choices", "value": {"choices": [label]}}]}]}``
— the model's label shows as a pre-annotation the reviewer accepts or changes.

Labeling configuration (``label_config.xml``): the clip, its transcript and one single choice
among the bundle's labels, named as the results name them (``emotion`` on ``audio``).

Export (what "Export → JSON" writes): the tasks again, each with ``annotations``: ``{"id",
"result": [...], "was_cancelled", "updated_at", ...}``. The label of a task is the choice of its
latest annotation that was not cancelled; tasks nobody labelled are left out (and counted).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.sax.saxutils import quoteattr

FROM_NAME, TO_NAME = "emotion", "audio"


class ReviewError(ValueError):
    """A Label Studio file that cannot be read as this loop's tasks; the message says where."""


def task(data: dict[str, Any], label: str, score: float, model_version: str) -> dict[str, Any]:
    """One import task with the model's label as its prediction."""
    return {
        "data": data,
        "predictions": [
            {
                "model_version": model_version,
                "score": score,
                "result": [
                    {
                        "from_name": FROM_NAME,
                        "to_name": TO_NAME,
                        "type": "choices",
                        "value": {"choices": [label]},
                    }
                ],
            }
        ],
    }


def label_config(labels: Sequence[str]) -> str:
    """The labeling configuration for these tasks: audio, transcript, one emotion."""
    choices = "\n".join(f"    <Choice value={quoteattr(label)}/>" for label in labels)
    return (
        "<View>\n"
        f'  <Audio name="{TO_NAME}" value="$audio"/>\n'
        '  <Text name="text" value="$text"/>\n'
        f'  <Choices name="{FROM_NAME}" toName="{TO_NAME}" choice="single" showInline="true">\n'
        f"{choices}\n"
        "  </Choices>\n"
        "</View>\n"
    )


@dataclass
class Reviewed:
    """What came back: segment_id → label, and what could not be used."""

    labels: dict[str, str]
    unlabelled: int  # tasks without an annotation that was not cancelled
    unknown: dict[str, int]  # labels outside the label set → how many tasks had them


def read_export(path: Path | str, labels: Sequence[str], s3=None) -> Reviewed:
    """The reviewed label of every task in Label Studio's JSON export of these tasks (a file or
    an ``s3://`` object)."""
    from annotator.storage import StorageError, read_text

    try:
        tasks = json.loads(read_text(path, s3))
    except (OSError, StorageError, json.JSONDecodeError) as exc:
        raise ReviewError(f"{path}: not a Label Studio JSON export ({exc})") from None
    if not isinstance(tasks, list):
        raise ReviewError(f"{path}: a Label Studio JSON export is a list of tasks")
    found: dict[str, str] = {}
    unlabelled = 0
    unknown: dict[str, int] = {}
    for n, item in enumerate(tasks):
        segment_id = (item.get("data") or {}).get("segment_id")
        if not segment_id:
            raise ReviewError(f"{path}: task {n} has no data.segment_id (not one of ours?)")
        choice = _latest_choice(item.get("annotations") or [])
        if choice is None:
            unlabelled += 1
        elif choice not in labels:
            unknown[choice] = unknown.get(choice, 0) + 1
        else:
            found[segment_id] = choice
    return Reviewed(found, unlabelled, unknown)


def _latest_choice(annotations: list[dict[str, Any]]) -> str | None:
    kept = [a for a in annotations if not a.get("was_cancelled")]
    # The latest edit wins: updated_at (ISO 8601, so it sorts as text), then the id.
    kept.sort(key=lambda a: (str(a.get("updated_at") or a.get("created_at") or ""), a.get("id", 0)))
    for annotation in reversed(kept):
        for result in annotation.get("result") or []:
            if result.get("from_name") == FROM_NAME and result.get("type") == "choices":
                choices = (result.get("value") or {}).get("choices") or []
                if choices:
                    return str(choices[0])
    return None
