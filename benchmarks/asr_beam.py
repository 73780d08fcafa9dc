"""ASR beam width: speed and word error rate of beam 1 against beam 5 (``models.asr.beam_size``).

    python -m benchmarks.asr_beam [--repeats 3]

Real speech through the served ASR path: the tests' sentences (tests/factories.py, SENTENCES)
spoken by espeak-ng in three voices at two rates, each utterance transcribed alone by the small
profile's Whisper tiny.en (CTranslate2 int8 on CPU) in batches of the ASR stage's size. WER is
jiwer's, over the lower-cased words without punctuation. Times are the best of ``--repeats``.
"""

from __future__ import annotations

import argparse
import re
import time

from benchmarks.common import write_result

VOICES = ("en-us", "en-gb", "en-us+f3")
RATES = (150, 185)
BEAMS = (1, 5)


def words(text: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9' ]", " ", text.lower()).split())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import jiwer

    from annotator.audio.synth import SAMPLE_RATE, speak
    from annotator.config import ASRConfig, default_home
    from annotator.models.asr import Transcriber
    from annotator.models.profiles import build_small_profile
    from tests.factories import SENTENCES

    root = build_small_profile(default_home())
    truth, clips = [], []
    for voice in VOICES:
        for rate in RATES:
            for sentence in SENTENCES:
                clips.append(speak(sentence, voice=voice, rate=rate))
                truth.append(words(sentence))
    audio_s = sum(len(c) for c in clips) / SAMPLE_RATE

    result: dict = {"utterances": len(clips), "audio_s": audio_s, "model": "small:whisper"}
    for beam in BEAMS:
        asr = Transcriber(str(root / "whisper"), ASRConfig(beam_size=beam), batch_size=8)
        asr(clips[:2])  # warm-up
        best = float("inf")
        for _ in range(args.repeats):
            t = time.perf_counter()
            found = asr(clips)
            best = min(best, time.perf_counter() - t)
        hypotheses = [words(f.text) for f in found]
        result[f"beam{beam}_s"] = best
        result[f"beam{beam}_rtfx"] = audio_s / best
        result[f"beam{beam}_cpu_s_per_audio_hour"] = best / audio_s * 3600
        result[f"beam{beam}_wer"] = jiwer.wer(truth, hypotheses)
        result[f"beam{beam}_sentences_exact"] = sum(
            h == t for h, t in zip(hypotheses, truth, strict=True)
        )
    result["beam1_over_beam5_speed"] = result["beam5_s"] / result["beam1_s"]
    write_result("asr_beam", result)


if __name__ == "__main__":
    main()
