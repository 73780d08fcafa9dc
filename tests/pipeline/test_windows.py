"""The decode step packs each recording's segments into ASR windows of up to 30 s."""

from __future__ import annotations

import itertools

import numpy as np

from annotator.audio.ingest import Segment, ingest
from annotator.audio.synth import encode, silence, speak
from annotator.config import load_config
from annotator.models.asr import WINDOW_SAMPLES, window_samples
from annotator.pipeline.windows import ingest_rows
from tests.factories import SENTENCES


def test_windows_hold_every_segment_once_in_order_per_recording_and_fit_in_30_s(tmp_path):
    # A stereo call, about 45 s a channel: each channel needs more than one window.
    channels = []
    for voice in ("en-us", "en-gb"):
        parts = []
        for text in SENTENCES * 2:
            parts += [speak(text, voice=voice), silence(1.2)]
        channels.append(np.concatenate(parts))
    n = max(len(c) for c in channels)
    stereo = np.stack([np.pad(c, (0, n - len(c))) for c in channels])
    path = encode(stereo, tmp_path / "call.wav")
    config = load_config(None, audio={"channels": "split"})

    rows = list(ingest_rows(str(path), config))
    assert rows == list(ingest_rows(str(path), config))  # a rerun packs the same windows
    windows = [r for r in rows if r["kind"] == "window"]
    (done,) = [r for r in rows if r["kind"] == "file_done"]
    assert {r["kind"] for r in rows} == {"window", "file_done"}

    segments = [s for s in ingest(str(path), config.audio, config.s3) if isinstance(s, Segment)]
    assert done["n_segments"] == len(segments) == sum(len(w["spans"]) for w in windows)
    for recording in {s.recording.recording_id for s in segments}:
        expected = [s for s in segments if s.recording.recording_id == recording]
        mine = [w for w in windows if w["recording_id"] == recording]
        assert len(mine) >= 2
        spans = [span for w in mine for span in w["spans"]]
        assert [s["segment_index"] for s in spans] == [s.index for s in expected]
        assert [(s["start_s"], s["end_s"]) for s in spans] == [
            (s.start_s, s.end_s) for s in expected
        ]
        audio = b"".join(w["audio"] for w in mine)
        assert audio == b"".join(np.asarray(s.audio, np.float32).tobytes() for s in expected)
        for w in mine:
            lengths = [s["samples"] for s in w["spans"]]
            assert window_samples(lengths) <= WINDOW_SAMPLES
        # Greedy: a window closed early would have had room for the next segment.
        for w, nxt in itertools.pairwise(mine):
            lengths = [s["samples"] for s in w["spans"]] + [nxt["spans"][0]["samples"]]
            assert window_samples(lengths) > WINDOW_SAMPLES
