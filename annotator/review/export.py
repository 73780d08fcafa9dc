"""Segments for people to review, in Label Studio's import format.

Which: the least confident first (the model's own ``emotion_confidence``, calibrated when the
bundle is), at most ``per_label`` of each label the model would have chosen (so one dominant label
cannot take the whole budget; ``unsure`` rows count under the label they would have had), at most
``budget`` in all, only those under ``below``. Chosen in DuckDB over the output's views.

Written to the export folder: ``audio/<segment_id>.wav`` (the segment's own channel, 16 kHz mono,
cut from where annotate read it: a file or a tar/zip archive's member, local or S3, each source
read once and each member decoded once, annotator/audio/clips.py), ``tasks.json`` (the tasks, the
model's label as a prediction) and ``label_config.xml``.
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

from annotator.config import AudioConfig, S3Config
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
) -> list[dict[str, Any]]:
    """The chosen segments, least confident first (files and archive members alike)."""
    from annotator.query import Annotations

    if budget < 1 or per_label < 1:
        raise ReviewError("budget and per-label quota must be at least 1")
    ann = Annotations(output, s3)
    try:
        return (
            ann.sql(
                "WITH ranked AS ("
                "  SELECT s.segment_id, s.call_id, s.source_uri, s.member, s.channel, s.start_s, "
                "   s.end_s, s.text, s.emotion, s.emotion_confidence, s.bundle_version, "
                f"   {PREDICTED} AS predicted, row_number() OVER (PARTITION BY {PREDICTED} "
                "      ORDER BY s.emotion_confidence, s.segment_id) AS rank "
                "  FROM segments s WHERE s.emotion_confidence < $below) "
                "SELECT * EXCLUDE (rank) FROM ranked WHERE rank <= $per_label "
                "ORDER BY emotion_confidence, segment_id LIMIT $budget",
                {"below": below, "per_label": per_label, "budget": budget},
            )
            .to_arrow_table()
            .to_pylist()
        )
    finally:
        ann.close()


def export_for_review(
    output: str,
    dest: Path | str,
    labels: Sequence[str],
    budget: int = 200,
    per_label: int = 50,
    below: float = 1.0,
    s3: S3Config | None = None,
    audio_prefix: str = "",
    audio: AudioConfig | None = None,
) -> dict[str, Any]:
    """Write the review folder (see the module docstring) to ``dest``, a directory or an
    ``s3://`` prefix (Label Studio's S3 storage reads it there); returns what was written.
    ``audio_prefix`` goes before ``audio/<id>.wav`` in each task (the URL Label Studio serves the
    folder at, e.g. ``/data/local-files/?d=review/``). ``audio``: the run's audio settings
    (archive bounds, extensions), as annotate read the sources."""
    from annotator.storage import exists, join, write_bytes, write_text

    dest = str(dest)
    if exists(join(dest, "tasks.json"), s3):
        raise ReviewError(f"{dest} already holds an export; choose a new folder")
    chosen = choose(output, budget, per_label, below, s3)
    for row in chosen:
        if not _SAFE_ID.match(row["segment_id"]):
            raise ReviewError(f"segment id {row['segment_id']!r} is not a safe file name")
    for clip, row in _clips(chosen, audio, s3):
        write_bytes(join(dest, "audio", f"{row['segment_id']}.wav"), _wav(clip), s3)
    tasks = []
    for row in chosen:  # tasks least confident first, as chosen
        data = {
            "audio": f"{audio_prefix}audio/{row['segment_id']}.wav",
            "text": row["text"],
            "segment_id": row["segment_id"],
            "call_id": row["call_id"],
            "source_uri": row["source_uri"],
            "member": row["member"],
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
    per: dict[str, int] = {}
    for row in chosen:
        per[row["predicted"]] = per.get(row["predicted"], 0) + 1
    return {"tasks": len(tasks), "per_label": per, "dest": dest}


def _clips(rows: Sequence[dict[str, Any]], audio: AudioConfig | None, s3: S3Config | None):
    """(the segment's mono clip, its row) for every row, source by source: each source read
    once, each archive member in it decoded once; one source's clips held at a time."""
    from annotator.audio.clips import source_clips
    from annotator.audio.decode import AudioError

    by_source: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for row in rows:
        by_source.setdefault(row["source_uri"], {}).setdefault(row["member"], []).append(row)
    for uri in sorted(by_source):
        members = by_source[uri]
        spans = {m: [_span(r) for r in members[m]] for m in members}
        try:
            clips = source_clips(uri, spans, audio, s3)
        except (AudioError, OSError) as exc:  # gone, or changed, since the night
            raise ReviewError(f"cannot cut the review clips from {uri}: {exc}") from None
        for member, chosen in members.items():
            for row, channels in zip(chosen, clips[member], strict=True):
                channel = row["channel"]
                yield (channels.mean(axis=0) if channel is None else channels[channel]), row


def _span(row: dict[str, Any]) -> tuple[int, int]:
    return round(row["start_s"] * SAMPLE_RATE), round(row["end_s"] * SAMPLE_RATE)


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
