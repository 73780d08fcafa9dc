"""Speech segments packed into ASR windows: consecutive segments of one recording, up to 30 s
with their gaps, in order and deterministically (the same input packs the same windows)."""

from __future__ import annotations

from collections.abc import Container, Iterator
from typing import Any

import numpy as np

from annotator.audio.ingest import (
    FileDone,
    IngestError,
    Item,
    MemberData,
    RecordingDone,
    Segment,
    ingest,
    ingest_member,
)
from annotator.audio.sources import recording_id
from annotator.config import AnnotatorConfig
from annotator.pipeline.rows import blank_row


def _window_row(segments: list[Segment], probe: bytes = b"") -> dict[str, Any]:
    rec = segments[0].recording
    row = blank_row()
    row.update(
        kind="window",
        call_id=rec.call_id,
        recording_id=rec.recording_id,
        source_uri=rec.source_uri,
        member=rec.member,
        channel=rec.channel,
        segment_index=segments[0].index,
        start_s=segments[0].start_s,
        end_s=segments[-1].end_s,
        audio=b"".join(np.ascontiguousarray(s.audio, dtype=np.float32).tobytes() for s in segments),
        spans=[
            {
                "segment_index": s.index,
                "start_s": s.start_s,
                "end_s": s.end_s,
                "samples": len(s.audio),
            }
            for s in segments
        ],
        language_probe=probe,
    )
    return row


def language_probing(config: AnnotatorConfig) -> bool:
    """Whether this configuration's windows carry a language probe (``models/asr.py``): decided
    once, where the run starts, from where the ASR model is (annotator/models/locate.py)."""
    from annotator.models.asr import needs_language_probe
    from annotator.models.locate import locate

    asr = config.models.asr
    return needs_language_probe(asr, locate(asr.model, config.models, config.s3), config.s3)


def ingest_rows(
    uri: str,
    config: AnnotatorConfig,
    done: Container[str] = frozenset(),
    probing: bool | None = None,
    members_apart: bool = False,
    member: MemberData | None = None,
) -> Iterator[dict[str, Any]]:
    """Rows (see the module doc) for one input URI; files whose call_id is in ``done`` skipped.

    ``members_apart``: an archive's members come out as ``member`` rows (their bytes in
    ``audio``), each to be decoded by another task: ``member`` given (the row's
    :class:`MemberData`), the rows of that one member (``uri`` is its archive).

    A recording's segments are packed, in order, into the ASR windows (``window`` rows): a window
    is closed when the next segment would not fit, and when its recording ends. ``probing``:
    whether windows carry a language probe (None: :func:`language_probing` decides)."""
    from annotator.models.asr import PROBE_S, WINDOW_SAMPLES, language_probe, window_samples

    if probing is None:
        probing = language_probing(config)
    probes: dict[str, bytes] = {}  # recording_id → its language probe, once it has PROBE_S s
    heard: dict[str, list[np.ndarray]] = {}  # recording_id → its first speech, until then

    def probe_of(rec_id: str) -> bytes:
        """The recording's probe: its first PROBE_S s of speech, or all it had when its first
        window closed (the same bytes for every window of it, whatever the batches)."""
        if not probing:
            return b""
        if rec_id not in probes:
            heard_so_far = heard.pop(rec_id, None) or [np.zeros(0, dtype=np.float32)]
            probes[rec_id] = language_probe(np.concatenate(heard_so_far))
        return probes[rec_id]

    segments: dict[str, int] = {}
    errors: dict[str, int] = {}
    durations: dict[str, float] = {}
    open_windows: dict[str, list[Segment]] = {}  # recording_id → segments not yet handed on
    retries = config.run
    items: Iterator[Item] = (
        ingest_member(member, config.audio)
        if member is not None
        else ingest(
            uri,
            config.audio,
            config.s3,
            skip=done.__contains__,
            tries=retries.retries,
            backoff_s=retries.retry_backoff_s,
            members_apart=members_apart,
        )
    )
    for item in items:
        row = blank_row()
        if isinstance(item, MemberData):
            row.update(
                kind="member",
                call_id=item.call_id,
                source_uri=item.source_uri,
                member=item.member,
                audio=item.data,
            )
        elif isinstance(item, Segment):
            rec = item.recording
            segments[rec.call_id] = segments.get(rec.call_id, 0) + 1
            if probing and rec.recording_id not in probes:
                first = heard.setdefault(rec.recording_id, [])
                first.append(np.asarray(item.audio, dtype=np.float32))
                if sum(len(a) for a in first) >= PROBE_S * config.audio.sample_rate:
                    probe_of(rec.recording_id)
            window = open_windows.setdefault(rec.recording_id, [])
            lengths = [len(s.audio) for s in window] + [len(item.audio)]
            if window and window_samples(lengths) > WINDOW_SAMPLES:
                yield _window_row(window, probe_of(rec.recording_id))
                window.clear()
            window.append(item)
            continue
        elif isinstance(item, IngestError):
            call_id = recording_id(item.source_uri, item.member, None)
            errors[call_id] = errors.get(call_id, 0) + 1
            row.update(
                kind="error",
                call_id=call_id,
                source_uri=item.source_uri,
                member=item.member,
                stage=item.stage,
                error_type=item.error_type,
                message=item.message,
                error_class=item.error_class,
            )
        elif isinstance(item, RecordingDone):
            call_id = item.recording.call_id
            durations[call_id] = max(durations.get(call_id, 0.0), item.duration_s)
            rec_id = item.recording.recording_id
            window = open_windows.pop(rec_id, [])
            if window:
                yield _window_row(window, probe_of(rec_id))
            probes.pop(rec_id, None)
            heard.pop(rec_id, None)
            continue
        elif isinstance(item, FileDone):
            # A file cut short (an error after some segments) may leave windows open.
            for rec_id in [
                r for r, w in open_windows.items() if w[0].recording.call_id == item.call_id
            ]:
                yield _window_row(open_windows.pop(rec_id), probe_of(rec_id))
                probes.pop(rec_id, None)
                heard.pop(rec_id, None)
            row.update(
                kind="file_done",
                call_id=item.call_id,
                source_uri=item.source_uri,
                member=item.member,
                n_segments=segments.pop(item.call_id, 0),
                n_errors=errors.pop(item.call_id, 0),
                duration_s=durations.pop(item.call_id, 0.0),
                skipped=int(item.skipped),
            )
        yield row
