"""Segments for people to review, in Label Studio's import format.

Which: the least confident first (the model's own ``emotion_confidence``, calibrated when the
bundle is), at most ``per_label`` of each label the model would have chosen (so one dominant label
cannot take the whole budget; ``unsure`` rows count under the label they would have had), at most
``budget`` in all, only those under ``below``. Chosen in DuckDB over the output's views.

Written to the export folder: ``audio/<segment_id>.wav`` (the segment's own channel, 16 kHz mono,
cut from its source: local or S3, each source decoded once), ``tasks.json`` (the tasks, the
model's label as a prediction) and ``label_config.xml``. Segments inside archives are not
exported (the member would need extracting first); they are counted.
"""

from __future__ import annotations

import io
import json
import re
import wave
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from annotator.config import S3Config
from annotator.review.labelstudio import ReviewError, label_config, task

SAMPLE_RATE = 16_000
# The label the model would have chosen: the most probable entry of emotion_probs (for an unsure
# row too, whose emotion column says "unsure").
PREDICTED = (
    "s.emotion_probs[list_position(list_transform(s.emotion_probs, lambda p: p.prob), "
    "list_max(list_transform(s.emotion_probs, lambda p: p.prob)))].label"
)
_SAFE_ID = re.compile(r"^[A-Za-z0-9_.-]+$")


def choose(
    output: str, budget: int, per_label: int, below: float = 1.0, s3: S3Config | None = None
) -> tuple[list[dict[str, Any]], int]:
    """(the chosen segments, least confident first; how many segments under ``below`` are inside
    archive members and so were not considered)."""
    from annotator.query import Annotations

    if budget < 1 or per_label < 1:
        raise ReviewError("budget and per-label quota must be at least 1")
    ann = Annotations(output, s3)
    try:
        (in_archives,) = ann.sql(
            "SELECT count(*) FROM segments s WHERE s.emotion_confidence < $below "
            "AND s.member <> ''",
            {"below": below},
        ).fetchall()[0]
        chosen = (
            ann.sql(
                "WITH ranked AS ("
                "  SELECT s.segment_id, s.call_id, s.source_uri, s.channel, s.start_s, s.end_s, "
                f"   s.text, s.emotion, s.emotion_confidence, s.bundle_version, {PREDICTED} AS "
                f"    predicted, row_number() OVER (PARTITION BY {PREDICTED} "
                "      ORDER BY s.emotion_confidence, s.segment_id) AS rank "
                "  FROM segments s WHERE s.emotion_confidence < $below AND s.member = '') "
                "SELECT * EXCLUDE (rank) FROM ranked WHERE rank <= $per_label "
                "ORDER BY emotion_confidence, segment_id LIMIT $budget",
                {"below": below, "per_label": per_label, "budget": budget},
            )
            .to_arrow_table()
            .to_pylist()
        )
    finally:
        ann.close()
    return chosen, int(in_archives)


def export_for_review(
    output: str,
    dest: Path | str,
    labels: Sequence[str],
    budget: int = 200,
    per_label: int = 50,
    below: float = 1.0,
    s3: S3Config | None = None,
    audio_prefix: str = "",
) -> dict[str, Any]:
    """Write the review folder (see the module docstring) to ``dest``, a directory or an
    ``s3://`` prefix (Label Studio's S3 storage reads it there); returns what was written.
    ``audio_prefix`` goes before ``audio/<id>.wav`` in each task (the URL Label Studio serves the
    folder at, e.g. ``/data/local-files/?d=review/``)."""
    from annotator.audio.decode import decode_source
    from annotator.storage import exists, join, write_bytes, write_text

    dest = str(dest)
    if exists(join(dest, "tasks.json"), s3):
        raise ReviewError(f"{dest} already holds an export; choose a new folder")
    chosen, in_archives = choose(output, budget, per_label, below, s3)
    tasks = []
    by_source = sorted(
        chosen, key=lambda r: (r["source_uri"], r["channel"] is not None, r["channel"] or 0)
    )
    last_uri, channels = None, None
    for row in by_source:
        if not _SAFE_ID.match(row["segment_id"]):
            raise ReviewError(f"segment id {row['segment_id']!r} is not a safe file name")
        if row["source_uri"] != last_uri:
            last_uri, channels = row["source_uri"], decode_source(row["source_uri"], s3)
        clip = _cut(channels, row["channel"], row["start_s"], row["end_s"])
        write_bytes(join(dest, "audio", f"{row['segment_id']}.wav"), _wav(clip), s3)
    for row in chosen:  # tasks least confident first, as chosen
        data = {
            "audio": f"{audio_prefix}audio/{row['segment_id']}.wav",
            "text": row["text"],
            "segment_id": row["segment_id"],
            "call_id": row["call_id"],
            "source_uri": row["source_uri"],
            "channel": row["channel"],
            "start_s": row["start_s"],
            "end_s": row["end_s"],
            "model_emotion": row["emotion"],
        }
        tasks.append(
            task(data, row["predicted"], float(row["emotion_confidence"]), row["bundle_version"])
        )
    write_text(join(dest, "label_config.xml"), label_config(labels), s3)
    write_text(join(dest, "tasks.json"), json.dumps(tasks, indent=1), s3)  # last: complete
    per = {}
    for row in chosen:
        per[row["predicted"]] = per.get(row["predicted"], 0) + 1
    return {"tasks": len(tasks), "per_label": per, "in_archives": in_archives, "dest": dest}


def _cut(channels: np.ndarray, channel: int | None, start_s: float, end_s: float) -> np.ndarray:
    audio = channels.mean(axis=0) if channel is None else channels[channel]
    return audio[round(start_s * SAMPLE_RATE) : round(end_s * SAMPLE_RATE)]


def _wav(audio: np.ndarray) -> bytes:
    """16-bit mono WAV bytes of a clip (clips are seconds long: built in memory)."""
    pcm = (np.clip(audio, -1.0, 1.0) * 32767).astype("<i2")
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(SAMPLE_RATE)
        handle.writeframes(pcm.tobytes())
    return buffer.getvalue()
