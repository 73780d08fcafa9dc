"""faster-whisper on windows of packed segments: each segment gets its own words back."""

from __future__ import annotations

import numpy as np

from annotator.audio.segment import SAMPLE_RATE
from annotator.audio.synth import silence, speak
from annotator.config import load_config
from annotator.models.asr import WINDOW_SAMPLES, Transcriber, window_samples, word_error_rate
from annotator.models.profiles import resolve_model
from tests.factories import SENTENCES


def _words(text: str) -> set[str]:
    return {w.strip(".,?!").lower() for w in text.split()}


def test_a_batch_of_segments_gives_each_its_own_words_and_word_times(small_home):
    config = load_config(None, models={"home": str(small_home)})
    model = resolve_model(config.models.asr.model, config.models.home)
    voices = ["en-us", "en-gb", "en-us+f3", "en-gb+m3"]
    clips = [speak(s, voice=voices[i % len(voices)]) for i, s in enumerate(SENTENCES)]
    clips += [silence(1.0), speak("yes")]  # nothing to say, and a very short clip
    # batch_size 2: several forward() calls, full and partial.
    transcriber = Transcriber(model, config.models.asr, batch_size=2)

    for seed in range(3):
        # Clips in a new order, packed greedily into windows of up to 30 s.
        order = np.random.default_rng(seed).permutation(len(clips)).tolist()
        windows: list[list[int]] = [[]]
        for i in order:
            if (
                windows[-1]
                and window_samples([len(clips[k]) for k in [*windows[-1], i]]) > WINDOW_SAMPLES
            ):
                windows.append([])
            windows[-1].append(i)
        assert len(windows) < len(clips) / 2  # several segments share each window
        # Where each segment starts in its recording:
        offsets = [[100.0 * i for i in window] for window in windows]
        found = transcriber.windows([[clips[i] for i in w] for w in windows], offsets)
        by_clip = {
            i: t for w, ts in zip(windows, found, strict=True) for i, t in zip(w, ts, strict=True)
        }
        assert sorted(by_clip) == list(range(len(clips)))
        spoken = range(len(SENTENCES))
        assert word_error_rate(SENTENCES, [by_clip[i].text for i in spoken]) < 0.2
        for i in spoken:
            # Its own sentence, not a neighbour's, and not a neighbour's as well (+ 8 words).
            heard = _words(by_clip[i].text)
            overlap = [len(heard & _words(s)) for s in SENTENCES]
            assert overlap[i] == max(overlap) > 0, by_clip[i].text
            assert len(by_clip[i].text.split()) <= len(SENTENCES[i].split()) + 3, by_clip[i].text
        assert not any(c.isalnum() for c in by_clip[len(SENTENCES)].text)
        assert "yes" in by_clip[len(SENTENCES) + 1].text.lower()
        for i, transcript in by_clip.items():
            end = 100.0 * i + len(clips[i]) / SAMPLE_RATE
            times = [t for w in transcript.words for t in (w.start, w.end)]
            assert all(100.0 * i <= t <= end + 1e-3 for t in times), (i, transcript.words)
            assert " ".join("".join(w.word for w in transcript.words).split()) == transcript.text


def test_each_segment_alone_matches_its_sentence(small_home):
    config = load_config(None, models={"home": str(small_home)})
    model = resolve_model(config.models.asr.model, config.models.home)
    transcriber = Transcriber(model, config.models.asr, batch_size=4)
    clips = [speak(s) for s in SENTENCES[:5]]
    found = transcriber(clips, [7.0] * len(clips))
    assert word_error_rate(SENTENCES[:5], [t.text for t in found]) < 0.2
    assert all(t.words and t.words[0].start >= 7.0 for t in found)
