"""Speech recognition with faster-whisper, batched across independent speech segments.

The segments of a batch may come from different recordings. Each goes through faster-whisper's
``BatchedInferencePipeline`` as one clip (batching across segments is disabled for now: see
``_transcribe``). Each segment gets its text, ``avg_logprob``, ``no_speech_prob``, its language with its
probability, and word timestamps relative to the recording.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from annotator.audio.segment import SAMPLE_RATE
from annotator.config import ASRConfig


@dataclass
class Word:
    start: float
    end: float
    word: str
    prob: float


@dataclass
class Transcript:
    text: str = ""
    language: str = ""
    language_prob: float = 0.0
    avg_logprob: float = float("nan")
    no_speech_prob: float = float("nan")
    words: list[Word] = field(default_factory=list)


def cpu_threads(options: ASRConfig) -> int:
    """CTranslate2 threads: the configured number, else 0 (CTranslate2's own default).

    On 2 cores, giving the ASR actor both cores did not make the e2e benchmark faster: the
    emotion stages share the same cores."""
    return options.cpu_threads


class Transcriber:
    """One faster-whisper model, loaded once; ``__call__`` transcribes a batch of segments."""

    def __init__(self, model_path: str, options: ASRConfig, batch_size: int = 8) -> None:
        from faster_whisper import BatchedInferencePipeline, WhisperModel

        self.model = WhisperModel(
            model_path,
            device=options.device,
            compute_type=options.compute_type,
            cpu_threads=cpu_threads(options),
        )
        self.pipeline = BatchedInferencePipeline(self.model)
        self.options = options
        self.batch_size = batch_size
        self.name = model_path

    def _languages(self, waveforms: Sequence[np.ndarray]) -> list[tuple[str, float]]:
        if self.options.language:
            return [(self.options.language, 1.0)] * len(waveforms)
        if not self.model.model.is_multilingual:
            return [("en", 1.0)] * len(waveforms)
        found = []
        for audio in waveforms:
            language, prob, _ = self.model.detect_language(audio=audio)
            found.append((language, float(prob)))
        return found

    def __call__(
        self, waveforms: Sequence[np.ndarray], offsets_s: Sequence[float] | None = None
    ) -> list[Transcript]:
        """Transcripts of ``waveforms`` (16 kHz mono, each ≤ 30 s), in order.

        ``offsets_s``: where each segment starts in its recording, added to word timestamps.
        """
        offsets_s = offsets_s if offsets_s is not None else [0.0] * len(waveforms)
        languages = self._languages(waveforms)
        results = [Transcript(language=lang, language_prob=p) for lang, p in languages]
        # One pipeline call per language (one language per call is faster-whisper's contract).
        for language in sorted({lang for lang, _ in languages}):
            picked = [i for i, (lang, _) in enumerate(languages) if lang == language]
            self._transcribe([waveforms[i] for i in picked], language, picked, offsets_s, results)
        return results

    def _transcribe(self, waveforms, language, indices, offsets_s, results) -> None:
        # One call per segment. Laying a batch's segments end to end with one clip each (true
        # batching) gave, under load in CI, a segment whose text held its neighbour's sentence;
        # until that is understood, correctness first (see the closing note of issue 5).
        for k, audio in enumerate(waveforms):
            audio = np.asarray(audio, dtype=np.float32)
            segments, _ = self.pipeline.transcribe(
                audio,
                language=language,
                beam_size=self.options.beam_size,
                clip_timestamps=[{"start": 0.0, "end": len(audio) / SAMPLE_RATE}],
                batch_size=1,
                word_timestamps=True,
                vad_filter=False,
                log_progress=False,
            )
            result = results[indices[k]]
            parts = []
            for segment in segments:
                parts.append(segment.text)
                result.avg_logprob = float(segment.avg_logprob)
                result.no_speech_prob = float(segment.no_speech_prob)
                shift = offsets_s[indices[k]]
                result.words += [
                    Word(
                        round(w.start + shift, 3),
                        round(w.end + shift, 3),
                        w.word,
                        float(w.probability),
                    )
                    for w in segment.words or []
                ]
            result.text = " ".join("".join(parts).split())


def _words(text: str) -> list[str]:
    return "".join(
        c if c.isalnum() or c.isspace() or c == "'" else " " for c in text.lower()
    ).split()


def word_error_rate(references: Sequence[str], hypotheses: Sequence[str]) -> float:
    """Corpus WER: word edits (substitutions + insertions + deletions) over reference words,
    after lower-casing and dropping punctuation."""
    edits = total = 0
    for ref, hyp in zip(references, hypotheses, strict=True):
        r, h = _words(ref), _words(hyp)
        row = list(range(len(h) + 1))
        for i, rw in enumerate(r, 1):
            prev, row[0] = row[0], i
            for j, hw in enumerate(h, 1):
                prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (rw != hw))
        edits += row[len(h)]
        total += len(r)
    return edits / max(total, 1)
