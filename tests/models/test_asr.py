"""faster-whisper batched across segments: each segment gets its own transcript back."""

from __future__ import annotations

import numpy as np

from annotator.audio.segment import SAMPLE_RATE
from annotator.audio.synth import silence, speak
from annotator.config import load_config
from annotator.models.asr import Transcriber, word_error_rate
from annotator.models.profiles import resolve_model
from tests.factories import SENTENCES


def test_a_batch_of_segments_gives_each_its_own_text_and_word_times(small_home):
    config = load_config(None, models={"home": str(small_home)})
    model = resolve_model(config.models.asr.model, config.models.home)
    voices = ["en-us", "en-gb", "en-us+f3", "en-gb+m3"]
    clips = [speak(s, voice=voices[i % len(voices)]) for i, s in enumerate(SENTENCES)]
    clips += [silence(1.0), speak("yes")]  # nothing to say, and a very short clip
    # Batches of 3 over 9 clips: full and partial batches, clips of every length side by side.
    transcriber = Transcriber(model, config.models.asr, batch_size=3)
    alone = [transcriber([clip])[0] for clip in clips]
    assert word_error_rate(SENTENCES, [t.text for t in alone[: len(SENTENCES)]]) < 0.25

    for seed in range(3):
        order = np.random.default_rng(seed).permutation(len(clips))
        offsets = [100.0 * i for i in order]  # where each segment starts in its recording
        batched = transcriber([clips[i] for i in order], offsets)
        assert [t.text for t in batched] == [alone[i].text for i in order]
        for transcript, i in zip(batched, order, strict=True):
            if not transcript.words:
                continue
            end = 100.0 * i + len(clips[i]) / SAMPLE_RATE
            assert 100.0 * i <= transcript.words[0].start <= transcript.words[-1].end <= end + 0.05
            assert [w.word for w in transcript.words] == [w.word for w in alone[i].words]
