"""``sources → decode → segment`` for one input URI: a stream of segments, recording summaries and
typed errors. Nothing a file raises gets out of here: bad input, and any exception its decoding
raises, becomes an :class:`IngestError`, transient or permanent (annotator/pipeline/failures.py).
Opening a source is tried again while it fails transiently (throttling, network, credentials)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import IO

import numpy as np

from annotator.audio.decode import AudioError, iter_decoded
from annotator.audio.segment import SAMPLE_RATE, StreamingSegmenter
from annotator.audio.sources import is_archive, iter_members, recording_id, recording_name
from annotator.config import AudioConfig, S3Config
from annotator.storage import filesystem


@dataclass(frozen=True)
class Recording:
    """One recording: a file, or an archive member, mixed or one channel of it.

    Attributes:
        call_id: the id of the mixed recording; the channels of one call share it.
        channel: None when channels were mixed, else the channel index.
    """

    source_uri: str
    member: str
    channel: int | None
    recording_id: str
    call_id: str


@dataclass
class Segment:
    recording: Recording
    index: int
    start_s: float
    end_s: float
    audio: np.ndarray = field(repr=False)

    @property
    def segment_id(self) -> str:
        return f"{self.recording.recording_id}-{self.index:06d}"


@dataclass
class RecordingDone:
    """Emitted after a recording's last segment: how many there were, or that it failed."""

    recording: Recording
    n_segments: int
    duration_s: float
    ok: bool


@dataclass
class FileDone:
    """Emitted after everything one file or archive member produced (or after a source-level
    error, with ``member == ""``): the unit the pipeline commits. ``call_id`` names it."""

    source_uri: str
    member: str
    call_id: str
    skipped: bool = False


@dataclass
class IngestError:
    source_uri: str
    member: str
    stage: str
    error_type: str
    message: str
    error_class: str = "permanent"

    @classmethod
    def of(cls, uri: str, member: str, stage: str, exc: BaseException) -> IngestError:
        """For an exception nobody expected: its type and message, sorted transient or not."""
        from annotator.pipeline.failures import describe, error_class

        return cls(uri, member, stage, type(exc).__name__, describe(exc), error_class(exc))


@dataclass
class MemberData:
    """An archive member's bytes, read but not decoded (``ingest(members_apart=True)``): another
    task decodes it (:func:`ingest_member`), so an archive's members are decoded side by side
    while the archive itself is read once."""

    source_uri: str
    member: str
    call_id: str
    data: bytes = field(repr=False)


Item = Segment | RecordingDone | IngestError | FileDone | MemberData


def ingest(
    uri: str,
    audio: AudioConfig,
    s3: S3Config,
    skip: Callable[[str], bool] | None = None,
    tries: int = 1,
    backoff_s: float = 0.0,
    members_apart: bool = False,
) -> Iterator[Item]:
    """Everything one input URI holds, as segments, per-recording summaries and errors.

    ``members_apart``: an archive's members (those not skipped, not empty, not refused) come out
    as :class:`MemberData` in place of their segments and ``FileDone``, for
    :func:`ingest_member` elsewhere; the archive's own errors and ``FileDone`` still come here.

    Every file (or archive member) ends with a :class:`FileDone`. ``skip(call_id)`` true means the
    file is already done: it is not decoded, and its FileDone says ``skipped``. Errors about the
    source or archive as a whole (``member == ""``) come last, followed by their own FileDone.
    Opening the source is tried ``tries`` times while it fails transiently, ``backoff_s`` × 2^k
    apart.
    """
    from annotator.output import failpoints
    from annotator.pipeline.failures import describe, error_class, with_retries

    def done(member: str, skipped: bool = False) -> FileDone:
        return FileDone(uri, member, recording_id(uri, member, None), skipped)

    def skipped(member: str) -> bool:
        return skip is not None and skip(recording_id(uri, member, None))

    try:
        fs, path = filesystem(uri, s3)
        archive = is_archive(path)
    except Exception as exc:  # a URI no filesystem takes
        yield IngestError.of(uri, "", "source", exc)
        yield done("")
        return
    if not archive and skipped(""):
        yield done("", skipped=True)
        return

    def open_source():
        failpoints.poison("source", [uri])
        if not fs.exists(path):
            return None
        return fs.size(path), fs.open(path, "rb")

    opened, exc, attempts = with_retries(open_source, tries, backoff_s, f"opening {uri}")
    if exc is not None:  # a source that cannot even be opened: credentials, network, perms
        yield IngestError(
            uri,
            "",
            "source",
            "unreadable",
            describe(exc) + (f" (after {attempts} tries)" if attempts > 1 else ""),
            error_class(exc),
        )
        yield done("")
        return
    if opened is None:
        yield IngestError(uri, "", "source", "not_found", "no such file or object")
        yield done("")
        return
    size, handle_cm = opened
    with handle_cm as handle:
        if size == 0:
            yield IngestError(uri, "", "decode", "empty_file", "zero bytes")
            yield done("")
        elif archive:
            archive_errors: list[IngestError] = []
            members = iter_members(handle, uri, audio)
            while True:
                # The archive itself breaking mid-way: the members after it are not reached (not
                # committed: a later run tries them again).
                try:
                    member = next(members, None)
                except Exception as exc:
                    archive_errors.append(IngestError.of(uri, "", "source", exc))
                    break
                if member is None:
                    break
                if isinstance(member, AudioError):
                    archive_errors.append(
                        IngestError(uri, "", member.stage, member.error_type, member.message)
                    )
                elif skipped(member.name):
                    yield done(member.name, skipped=True)
                elif member.size == 0:
                    yield IngestError(uri, member.name, "decode", "empty_file", "zero bytes")
                    yield done(member.name)
                elif members_apart:  # read (bounded: max_member_bytes), decoded elsewhere
                    yield MemberData(
                        uri, member.name, recording_id(uri, member.name, None), member.file.read()
                    )
                else:
                    yield from _recordings(uri, member.name, member.file, audio)
                    yield done(member.name)
            yield from archive_errors
            yield done("")
        else:
            yield from _recordings(uri, "", handle, audio)
            yield done("")


def ingest_member(member: MemberData, audio: AudioConfig) -> Iterator[Item]:
    """An archive member read by ``ingest(members_apart=True)``: its segments, summaries and
    errors, then its ``FileDone``, as ``ingest`` gives them for a member it decodes itself."""
    import io

    yield from _recordings(member.source_uri, member.member, io.BytesIO(member.data), audio)
    yield FileDone(member.source_uri, member.member, member.call_id)


def _recordings(uri: str, member: str, handle: IO[bytes], audio: AudioConfig) -> Iterator[Item]:
    """Decode one file and segment each of its recordings (one when mixed, one per channel)."""
    call_id = recording_id(uri, member, None)
    recordings: list[Recording] = []
    segmenters: list[StreamingSegmenter] = []
    counts: list[int] = []

    def start(n_channels: int) -> None:
        channels = [None] if audio.channels == "mix" else list(range(n_channels))
        for ch in channels:
            rid = call_id if ch is None else recording_id(uri, member, ch)
            recordings.append(Recording(uri, member, ch, rid, call_id))
            segmenters.append(StreamingSegmenter(audio))
            counts.append(0)

    def emit(i: int, spans) -> Iterator[Segment]:
        for begin, end, samples in spans:
            yield Segment(recordings[i], counts[i], begin / SAMPLE_RATE, end / SAMPLE_RATE, samples)
            counts[i] += 1

    from annotator.output import failpoints

    name = recording_name(uri, member)
    try:
        for block in iter_decoded(handle, audio.sample_rate, name=name):
            if not recordings:
                start(block.shape[0])
            channels = [block.mean(axis=0)] if audio.channels == "mix" else list(block)
            for i, samples in enumerate(channels):
                yield from emit(i, segmenters[i].feed(samples))
        failpoints.poison("decode", [name])  # the file decoded, its last segments not yet out
        for i, segmenter in enumerate(segmenters):
            yield from emit(i, segmenter.finish())
    except Exception as exc:  # AudioError is expected; anything else is the file's too
        if isinstance(exc, AudioError):
            yield IngestError(uri, member, exc.stage, exc.error_type, exc.message)
        else:
            yield IngestError.of(uri, member, "decode", exc)
        for rec, seg in zip(recordings, segmenters, strict=True):
            yield RecordingDone(rec, 0, seg.total / SAMPLE_RATE, ok=False)
        return
    for rec, seg, n in zip(recordings, segmenters, counts, strict=True):
        if n == 0:
            channel = "" if rec.channel is None else f" (channel {rec.channel})"
            yield IngestError(uri, member, "segment", "no_speech", f"no speech found{channel}")
        yield RecordingDone(rec, n, seg.total / SAMPLE_RATE, ok=True)
