"""Speech segments with Silero VAD (the model and options faster-whisper ships), over a stream.

The VAD runs over windows of ``chunk_s`` seconds. Speech that may continue past a window's end is
held back and the next window starts at it, so memory is bounded by one window plus one segment,
whatever the length of the recording, and no segment is cut by a window edge.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from annotator.config import AudioConfig

SAMPLE_RATE = 16_000


class StreamingSegmenter:
    """Feed blocks of mono 16 kHz audio; get (start_sample, end_sample, audio) speech segments."""

    def __init__(self, audio: AudioConfig) -> None:
        from faster_whisper.vad import VadOptions

        self.options = VadOptions(
            threshold=audio.vad_threshold,
            min_silence_duration_ms=audio.min_silence_ms,
            speech_pad_ms=audio.speech_pad_ms,
            max_speech_duration_s=audio.max_segment_s,
        )
        self.max_samples = int(audio.max_segment_s * SAMPLE_RATE)
        self.window = max(int(audio.chunk_s * SAMPLE_RATE), 4 * self.max_samples)
        # Speech ending this close to a window's end might go on in the next one.
        self.guard = (
            int((audio.min_silence_ms + 2 * audio.speech_pad_ms) / 1000 * SAMPLE_RATE) + SAMPLE_RATE
        )
        self._blocks: list[np.ndarray] = []
        self._buffered = 0
        self._offset = 0  # sample index of the buffer's first sample within the recording
        self.total = 0

    def feed(self, block: np.ndarray) -> Iterator[tuple[int, int, np.ndarray]]:
        self._blocks.append(np.asarray(block, dtype=np.float32))
        self._buffered += len(block)
        self.total += len(block)
        if self._buffered >= self.window:
            yield from self._run(final=False)

    def finish(self) -> Iterator[tuple[int, int, np.ndarray]]:
        if self._buffered:
            yield from self._run(final=True)

    def _run(self, final: bool) -> Iterator[tuple[int, int, np.ndarray]]:
        from faster_whisper.vad import get_speech_timestamps

        buffer = np.concatenate(self._blocks)
        spans = get_speech_timestamps(buffer, self.options, sampling_rate=SAMPLE_RATE)
        cut = len(buffer)
        if not final:
            cut = len(buffer) - self.guard
            open_spans = [s for s in spans if s["end"] > cut]
            if open_spans:
                cut = min(cut, open_spans[0]["start"])
            spans = [s for s in spans if s["end"] <= cut]
        for span in spans:
            for start, end in self._split(span["start"], span["end"]):
                yield self._offset + start, self._offset + end, buffer[start:end].copy()
        rest = buffer[cut:]
        self._blocks = [rest] if len(rest) else []
        self._buffered = len(rest)
        self._offset += cut

    def _split(self, start: int, end: int) -> Iterator[tuple[int, int]]:
        # Padding can push a VAD span a little past max_segment_s; split it evenly.
        parts = -(-(end - start) // self.max_samples)
        bounds = np.linspace(start, end, parts + 1).round().astype(int)
        yield from zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True)
