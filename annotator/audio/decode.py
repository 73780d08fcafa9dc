"""Decode any audio FFmpeg reads (through PyAV) to 16 kHz float32, in bounded chunks.

Channels are kept apart here, shape (channels, samples); the channel policy (``mix`` / ``split``)
is applied by the caller. Every failure is an :class:`AudioError` with a stable ``error_type``.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import BinaryIO

import numpy as np

SAMPLE_RATE = 16_000
# Decoded audio may end this much before the container's declared duration without being called
# truncated (encoder padding, priming samples, rounding of the header's duration).
TRUNCATION_SLACK_S = 0.5


class AudioError(Exception):
    """A typed failure of one input; the sink writes it to the ``errors`` table.

    Attributes:
        stage: where it happened (``source``, ``archive``, ``decode``, ``segment``).
        error_type: a stable machine-readable kind (``empty_file``, ``not_audio``, ``truncated``,
            ``decode_error``, ``unsafe_member``, ``archive_too_large``, ``member_too_large``,
            ``unreadable_archive``, ``no_speech``, ``not_found``).
        message: what a person needs to know.
    """

    def __init__(self, stage: str, error_type: str, message: str) -> None:
        super().__init__(f"{stage}/{error_type}: {message}")
        self.stage, self.error_type, self.message = stage, error_type, message


def iter_decoded(
    source: BinaryIO | str, sample_rate: int = SAMPLE_RATE, name: str = ""
) -> Iterator[np.ndarray]:
    """Yield (channels, samples) float32 blocks at ``sample_rate`` until the stream ends.

    Memory is bounded by one decoded frame plus the resampler's buffer, whatever the file length.
    """
    import av

    label = name or getattr(source, "name", "") or "input"
    try:
        container = av.open(source, mode="r")
    except av.error.InvalidDataError:
        raise AudioError("decode", "not_audio", f"{label}: not a format FFmpeg can read") from None
    except (av.error.FFmpegError, OSError, ValueError) as exc:
        raise AudioError("decode", "not_audio", f"{label}: cannot open ({exc})") from None
    with container:
        if not container.streams.audio:
            raise AudioError("decode", "not_audio", f"{label}: no audio stream")
        stream = container.streams.audio[0]
        declared = (
            float(stream.duration * stream.time_base)
            if stream.duration and stream.time_base
            else None
        )
        if declared is None and container.duration:
            declared = container.duration / 1_000_000
        # MP4/M4A store the exact sample count; their last AAC frame is padded past it.
        limit = None
        if declared is not None and {"mov", "mp4"} & set(container.format.name.split(",")):
            limit = round(declared * sample_rate)
        resampler = None
        produced = 0
        try:
            for frame in container.decode(stream):
                if resampler is None:
                    # Keep the source layout; mixing or splitting channels is the caller's policy.
                    resampler = av.AudioResampler(
                        format="fltp", layout=frame.layout.name, rate=sample_rate
                    )
                for block in _blocks(resampler.resample(frame), produced, limit):
                    produced += block.shape[1]
                    yield block
            if resampler is not None:
                for block in _blocks(resampler.resample(None), produced, limit):
                    produced += block.shape[1]
                    yield block
        except av.error.FFmpegError as exc:
            raise AudioError("decode", "decode_error", f"{label}: {exc}") from None
    if produced == 0:
        raise AudioError("decode", "not_audio", f"{label}: no audio samples decoded")
    if declared is not None and produced / sample_rate < declared - TRUNCATION_SLACK_S:
        raise AudioError(
            "decode",
            "truncated",
            f"{label}: decoded {produced / sample_rate:.2f} s of {declared:.2f} s declared",
        )


def _blocks(frames, produced: int, limit: int | None) -> Iterator[np.ndarray]:
    for out in frames:
        block = out.to_ndarray()
        if limit is not None:
            block = block[:, : max(0, limit - produced)]
        if block.shape[1]:
            produced += block.shape[1]
            yield block


def decode_bytes(data: bytes, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Whole small input in memory → mono float32 (channels averaged). For short clips only."""
    if not data:
        raise AudioError("decode", "empty_file", "zero bytes")
    blocks = list(iter_decoded(io.BytesIO(data), sample_rate))
    return np.concatenate(blocks, axis=1).mean(axis=0).astype(np.float32)


def decode_source(uri: str, s3=None) -> np.ndarray:
    """(channels, samples) float32 at 16 kHz of one whole source file (local or ``s3://``): for
    training examples and review clips, cut from it afterwards."""
    from annotator.config import S3Config
    from annotator.storage import filesystem

    fs, path = filesystem(uri, s3 or S3Config())
    with fs.open(path, "rb") as handle:
        data = handle.read()
    if not data:
        raise AudioError("decode", "empty_file", f"{uri}: zero bytes")
    return np.concatenate(list(iter_decoded(io.BytesIO(data), name=uri)), axis=1)


def decode_spans(uri: str, spans: list[tuple[int, int | None]], s3=None) -> list[np.ndarray]:
    """(channels, samples) float32 at 16 kHz of each ``(start, end)`` sample span of one source
    file (local or ``s3://``; ``end`` None: to the end), in one streamed pass (:func:`cut_spans`).
    Archive members: annotator/audio/clips.py."""
    from annotator.config import S3Config
    from annotator.storage import filesystem

    if not spans:
        return []
    fs, path = filesystem(uri, s3 or S3Config())
    with fs.open(path, "rb") as handle:
        if fs.size(path) == 0:
            raise AudioError("decode", "empty_file", f"{uri}: zero bytes")
        return cut_spans(handle, spans, uri)


def cut_spans(
    handle: BinaryIO, spans: list[tuple[int, int | None]], name: str = ""
) -> list[np.ndarray]:
    """(channels, samples) float32 at 16 kHz of each ``(start, end)`` sample span of the audio
    ``handle`` reads, in one streamed pass: decoded block by block, only the spans' samples kept,
    so memory is the spans' and not the source's, and the pass stops after the last span ends.
    The samples equal those of :func:`decode_source` at the same positions (the same decode,
    cut), and those ingest segmented (the same :func:`iter_decoded`)."""
    if not spans:
        return []
    pieces: list[list[np.ndarray]] = [[] for _ in spans]
    last = None if any(end is None for _, end in spans) else max(end for _, end in spans)
    position = 0
    channels = None
    blocks = iter_decoded(handle, name=name)
    try:
        for block in blocks:
            channels = block.shape[0]
            after = position + block.shape[1]
            for k, (start, end) in enumerate(spans):
                a, b = max(start, position), after if end is None else min(end, after)
                if a < b:
                    pieces[k].append(block[:, a - position : b - position])
            position = after
            if last is not None and position >= last:
                break
    finally:
        blocks.close()
    return [
        np.concatenate(p, axis=1) if p else np.zeros((channels or 1, 0), np.float32) for p in pieces
    ]
