"""Speech recognition with faster-whisper, batched across independent speech segments.

The segments of a batch may come from different recordings. They go through faster-whisper's
``BatchedInferencePipeline`` together, ``batch_size`` clips per encoder and beam-search call,
one clip per segment; the pipeline returns one result per clip, in order. Each segment gets its
text, ``avg_logprob``, ``no_speech_prob``, its language with its probability, and word
timestamps relative to the recording.
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
        self._transcription_options = None

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
        # faster-whisper's public transcribe() returns one stream of segments for one recording;
        # mapping them back to the clips they came from (by time offset) is what mixed a
        # neighbour's sentence into a segment under CI load (issue 5). The pipeline's forward()
        # instead returns one list of sub-segments per input clip, in input order, so a result
        # can only land on its own segment. Each clip gets its own 60 s slot on a virtual
        # timeline (seek = slot start): word times come back relative to the slot.
        from faster_whisper.audio import pad_or_trim
        from faster_whisper.tokenizer import Tokenizer

        tokenizer = Tokenizer(
            self.model.hf_tokenizer,
            self.model.model.is_multilingual,
            task="transcribe",
            language=language,
        )
        options = self._options()
        for first in range(0, len(waveforms), self.batch_size):
            chunk = [
                np.asarray(a, dtype=np.float32) for a in waveforms[first : first + self.batch_size]
            ]
            features = np.stack(
                [pad_or_trim(self.model.feature_extractor(a)[..., :-1]) for a in chunk]
            )
            metadata = [
                {
                    "offset": float(k * _SLOT_S),
                    "duration": len(a) / SAMPLE_RATE,
                    "segments": [{"start": 0, "end": len(a)}],
                }
                for k, a in enumerate(chunk)
            ]
            self.pipeline.last_speech_timestamp = 0.0
            outputs = self.pipeline.forward(features, tokenizer, metadata, options)
            for k, subsegments in enumerate(outputs):
                i = indices[first + k]
                result = results[i]
                shift = offsets_s[i] - k * _SLOT_S
                for sub in subsegments:
                    result.avg_logprob = float(sub["avg_logprob"])
                    result.no_speech_prob = float(sub["no_speech_prob"])
                    result.words += [
                        Word(
                            round(float(w["start"]) + shift, 3),
                            round(float(w["end"]) + shift, 3),
                            w["word"],
                            float(w["probability"]),
                        )
                        for w in sub.get("words") or []
                    ]
                result.text = " ".join("".join(sub["text"] for sub in subsegments).split())

    def _options(self):
        """faster-whisper's TranscriptionOptions for this model and config, built once by
        faster-whisper itself (transcribe() only prepares until its segments are iterated)."""
        if self._transcription_options is None:
            _, info = self.pipeline.transcribe(
                np.zeros(SAMPLE_RATE // 10, dtype=np.float32),
                language="en",
                beam_size=self.options.beam_size,
                clip_timestamps=[{"start": 0.0, "end": 0.1}],
                word_timestamps=True,
                vad_filter=False,
                log_progress=False,
            )
            self._transcription_options = info.transcription_options
        return self._transcription_options


# Each clip of a batch sits in its own slot of this many seconds (clips are ≤ 30 s).
_SLOT_S = 60


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
