"""Speech recognition with faster-whisper on windows of speech segments.

Whisper's encoder always hears 30 s, and speech segments last a few seconds: one segment per
window would pay for ~10× the audio it holds. So consecutive segments of one recording are
packed into windows of up to 30 s with 0.5 s of silence between them (as faster-whisper and
WhisperX pack VAD chunks); the pipeline's decode step decides the windows from the recording
alone, so a rerun hears the same windows. Windows go through faster-whisper's
``BatchedInferencePipeline`` ``batch_size`` at a time, and each word goes back to the segment
whose span holds it. Each segment gets its text, the window's language with its probability,
word timestamps relative to the recording, and the ``avg_logprob`` and ``no_speech_prob`` of
the window it was decoded in.

Language: one per recording. With a multilingual model and no language configured, the decode
step puts the recording's first :data:`PROBE_S` seconds of speech (int16) on each of its windows
(:func:`language_probe`); every ASR actor that gets one of its windows detects the language from
that same audio, once per recording (:meth:`Transcriber.language_of`), so a recording never
changes language between windows, whichever actors decode them.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from annotator.audio.segment import SAMPLE_RATE
from annotator.config import ASRConfig, S3Config


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


PROBE_S = 10  # seconds of a recording's first speech that its language is detected from
_MULTILINGUAL_VOCABULARY = 51_865  # CTranslate2 / faster-whisper: fewer tokens = English-only


def needs_language_probe(options: ASRConfig, model_path: str, s3: S3Config | None = None) -> bool:
    """Whether windows must carry a language probe: no language configured and a model that may
    be multilingual (the model's vocabulary says, local or in object storage; a name ending
    ``.en`` is English-only)."""
    settings = (s3 or S3Config()).model_dump_json()
    return not options.language and _may_be_multilingual(model_path, settings)


@functools.cache  # read once per process
def _may_be_multilingual(model_path: str, s3_settings: str) -> bool:
    """From the model's vocabulary (a local directory, or an ``s3://`` one: only that file is
    read), else from its name."""
    from annotator.storage import StorageError, join, read_bytes

    s3 = S3Config.model_validate_json(s3_settings)

    for name, count in (
        ("vocabulary.json", lambda data: len(json.loads(data))),
        ("vocabulary.txt", lambda data: data.count(b"\n") + (not data.endswith(b"\n"))),
    ):
        try:
            data = read_bytes(join(model_path, name), s3)
        except (StorageError, OSError):
            continue
        return count(data) >= _MULTILINGUAL_VOCABULARY
    return not model_path.endswith(".en")


def language_probe(audio: np.ndarray) -> bytes:
    """The first :data:`PROBE_S` s of ``audio`` (float32, 16 kHz) as int16 PCM bytes."""
    head = np.clip(audio[: PROBE_S * SAMPLE_RATE], -1.0, 1.0)
    return (head * 32767).astype(np.int16).tobytes()


def probe_audio(probe: bytes) -> np.ndarray:
    return np.frombuffer(probe, dtype=np.int16).astype(np.float32) / 32767


def cpu_threads(options: ASRConfig) -> int:
    """CTranslate2 threads: the configured number, else CTranslate2's documented default, 4,
    capped by the CPUs this process may use.

    Left at 0, CTranslate2 would follow OMP_NUM_THREADS, which Ray sets to an actor's
    ``num_cpus``: a 1-CPU ASR actor then decodes on one thread (measured on 2 cores: 12.2 s
    against 8.8 s with two threads for the same 28 segments)."""
    if options.cpu_threads:
        return options.cpu_threads
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(4, usable or 1))


class Transcriber:
    """One faster-whisper model, loaded once. ``windows`` transcribes packed windows of
    segments; ``__call__`` transcribes segments each heard alone (training, evaluation)."""

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

    def _language(self, audio: np.ndarray) -> tuple[str, float]:
        if self.options.language:
            return self.options.language, 1.0
        if not self.model.model.is_multilingual:
            return "en", 1.0
        language, prob, _ = self.model.detect_language(audio=audio)
        return language, float(prob)

    def language_of(self, probe: np.ndarray) -> tuple[str, float]:
        """(language, probability) of a recording, from its :func:`language_probe` audio."""
        return self._language(probe)

    def __call__(
        self, waveforms: Sequence[np.ndarray], offsets_s: Sequence[float] | None = None
    ) -> list[Transcript]:
        """Transcripts of ``waveforms`` (16 kHz mono, each ≤ 30 s), in order, each heard alone.

        ``offsets_s``: where each segment starts in its recording, added to word timestamps.
        """
        offsets_s = offsets_s if offsets_s is not None else [0.0] * len(waveforms)
        found = self.windows([[a] for a in waveforms], [[o] for o in offsets_s])
        return [window[0] for window in found]

    def windows(
        self,
        windows: Sequence[Sequence[np.ndarray]],
        offsets_s: Sequence[Sequence[float]],
        languages: Sequence[tuple[str, float]] | None = None,
    ) -> list[list[Transcript]]:
        """Transcripts of segments heard together: ``windows[w]`` holds consecutive segments of
        one recording whose lengths, with a 0.5 s gap between neighbours, fit in 30 s
        (:func:`window_samples`). They are laid end to end with those gaps, the window is
        transcribed once, and each word goes back to the segment whose span holds it.

        Each segment gets its words and text, the window's language, and the window's
        ``avg_logprob`` and ``no_speech_prob``. ``offsets_s[w][k]``: where segment k of window w
        starts in its recording. ``languages[w]``: window w's (language, probability), its
        recording's; None detects each window's own."""
        gap = np.zeros(GAP_SAMPLES, dtype=np.float32)
        audio, spans = [], []
        for clips in windows:
            pieces, window_spans, position = [], [], 0
            for clip in clips:
                clip = np.asarray(clip, dtype=np.float32)
                if pieces:
                    pieces.append(gap)
                    position += len(gap)
                pieces.append(clip)
                window_spans.append((position / SAMPLE_RATE, (position + len(clip)) / SAMPLE_RATE))
                position += len(clip)
            audio.append(np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.float32))
            spans.append(window_spans)
        if languages is None:
            languages = [self._language(a) for a in audio]
        decoded: list = [None] * len(audio)
        # One pipeline call per language (one language per call is faster-whisper's contract).
        for language in sorted({lang for lang, _ in languages}):
            picked = [w for w, (lang, _) in enumerate(languages) if lang == language]
            found = self._decode([audio[w] for w in picked], language)
            for w, result in zip(picked, found, strict=True):
                decoded[w] = result
        return [_split(decoded[w], spans[w], offsets_s[w], languages[w]) for w in range(len(audio))]

    def _decode(self, audio: list[np.ndarray], language: str):
        """(text, words with times in the window, avg_logprob, no_speech_prob) per window, in
        order: ``batch_size`` windows per encoder and beam-search call.

        faster-whisper's public ``transcribe()`` returns one stream of segments for a recording,
        to be mapped back by time; the pipeline's ``forward()`` returns one list per window, in
        input order, so a result can only land on its own window. Window k sits at 60·k s on
        a virtual timeline (``seek``): word times come back shifted by that."""
        from faster_whisper.audio import pad_or_trim
        from faster_whisper.tokenizer import Tokenizer

        tokenizer = Tokenizer(
            self.model.hf_tokenizer,
            self.model.model.is_multilingual,
            task="transcribe",
            language=language,
        )
        options = self._options()
        for first in range(0, len(audio), self.batch_size):
            chunk = audio[first : first + self.batch_size]
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
            if len(outputs) != len(chunk):  # one result per window, in order, or nothing
                raise RuntimeError(f"faster-whisper gave {len(outputs)} results for {len(chunk)}")
            for k, subsegments in enumerate(outputs):
                words = [
                    Word(
                        float(w["start"]) - k * _SLOT_S,
                        float(w["end"]) - k * _SLOT_S,
                        w["word"],
                        float(w["probability"]),
                    )
                    for sub in subsegments
                    for w in sub.get("words") or []
                ]
                text = "".join(sub["text"] for sub in subsegments)
                logprob = no_speech = float("nan")
                if subsegments:
                    logprob = float(subsegments[0]["avg_logprob"])
                    no_speech = float(subsegments[0]["no_speech_prob"])
                yield text, words, logprob, no_speech

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
                max_new_tokens=self.options.max_new_tokens,
            )
            self._transcription_options = info.transcription_options
        return self._transcription_options


# Each window of a forward() call sits in its own slot of this many seconds (windows are ≤ 30 s).
_SLOT_S = 60
WINDOW_SAMPLES = 30 * SAMPLE_RATE  # Whisper's receptive field
GAP_SAMPLES = SAMPLE_RATE // 2  # silence between packed segments, so no word straddles two


def window_samples(lengths: Sequence[int]) -> int:
    """Samples of a window holding segments of these lengths (gaps included)."""
    return sum(lengths) + GAP_SAMPLES * max(len(lengths) - 1, 0)


def _split(decoded, spans, offsets_s, language) -> list[Transcript]:
    """A window's decoding handed back to its segments."""
    text, words, avg_logprob, no_speech_prob = decoded
    owner = [_owner(spans, (w.start + w.end) / 2) for w in words]
    out = []
    for j, (begin, finish) in enumerate(spans):
        shift = offsets_s[j] - begin
        mine = [w for w, o in zip(words, owner, strict=True) if o == j]
        result = Transcript(
            language=language[0],
            language_prob=language[1],
            avg_logprob=avg_logprob,
            no_speech_prob=no_speech_prob,
            words=[
                Word(
                    round(max(w.start, begin) + shift, 3),
                    round(min(w.end, finish) + shift, 3),
                    w.word,
                    w.prob,
                )
                for w in mine
            ],
        )
        # A window of one segment keeps Whisper's own text (it can hold tokens that no word
        # alignment covers); a shared window's text is rebuilt from the words.
        result.text = " ".join((text if len(spans) == 1 else "".join(w.word for w in mine)).split())
        out.append(result)
    return out


def _owner(spans: Sequence[tuple[float, float]], t: float) -> int:
    """Index of the span holding time ``t``, else of the nearest span."""
    distances = [0.0 if a <= t <= b else min(abs(t - a), abs(t - b)) for a, b in spans]
    return int(np.argmin(distances))


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
