"""Manifest readers over tiny copies of the corpus layouts."""

from __future__ import annotations

import pytest

from training.data import (
    Example,
    ManifestError,
    iemocap_manifest,
    meld_manifest,
    read_manifest,
    write_manifest,
)


def test_iemocap_layout_merges_excited_into_happy_and_folds_by_session(tmp_path):
    for n, (utt, emo) in enumerate([("F000", "exc"), ("M001", "fru"), ("F002", "ang")], 1):
        session = tmp_path / f"Session{n}"
        dialog = f"Ses0{n}F_impro01"
        (session / "dialog" / "EmoEvaluation").mkdir(parents=True)
        (session / "dialog" / "transcriptions").mkdir(parents=True)
        (session / "dialog" / "EmoEvaluation" / f"{dialog}.txt").write_text(
            f"% header\n[6.2901 - 8.2357]\t{dialog}_{utt}\t{emo}\t[2.5000, 2.5000, 2.5000]\n"
        )
        (session / "dialog" / "transcriptions" / f"{dialog}.txt").write_text(
            f"{dialog}_{utt} [006.2901-008.2357]: Excuse me.\n"
        )
    examples = iemocap_manifest(tmp_path, test_session=3)
    assert [(e.label, e.fold, e.split) for e in examples] == [
        ("happy", 1, "train"),
        ("angry", 3, "test"),
    ]
    assert examples[0].transcript == "Excuse me."
    assert examples[0].audio_uri.endswith(
        "Session1/sentences/wav/Ses01F_impro01/Ses01F_impro01_F000.wav"
    )
    with pytest.raises(ManifestError, match="Session1"):
        iemocap_manifest(tmp_path / "nothing")


def test_meld_layout_official_splits_and_four_classes(tmp_path):
    header = "Sr No.,Utterance,Speaker,Emotion,Sentiment,Dialogue_ID,Utterance_ID\n"
    for split, name in (("train", "train"), ("dev", "dev"), ("test", "test")):
        (tmp_path / f"{name}_sent_emo.csv").write_text(
            header + f'1,"Oh, {split}!",Joey,joy,positive,3,4\n2,What?,Ross,surprise,neutral,3,5\n'
        )
    seven = meld_manifest(tmp_path, classes=7)
    four = meld_manifest(tmp_path, classes=4)
    assert len(seven) == 6 and len(four) == 3
    assert {e.split for e in four} == {"train", "dev", "test"}
    assert four[0].audio_uri.endswith("train/dia3_utt4.wav") and four[0].transcript == "Oh, train!"


def test_manifest_round_trip_and_errors(tmp_path):
    path = write_manifest([Example("a.wav", "hi", "sad", start_s=1.0, end_s=2.0)], tmp_path / "m")
    assert read_manifest(path, ["sad"])[0].end_s == 2.0
    with pytest.raises(ManifestError, match=":1: label 'sad'"):
        read_manifest(path, ["happy"])
    path.write_text('{"audio_uri": "a", "transcript": "", "label": "sad", "colour": 1}\n')
    with pytest.raises(ManifestError, match="colour"):
        read_manifest(path)


def test_annotations_manifest_takes_each_segments_own_channel_once_per_source(
    tmp_path, monkeypatch
):
    """A split call (left channel a 440 Hz tone, right silent): each example is its own channel,
    as it was served, with the speaker serving names; one decode per source; an archive member's
    segment names the archive and the member."""
    import datetime as dt
    import wave

    import numpy as np
    import pyarrow as pa

    from annotator.output.tables import OutputTables
    from annotator.schema import FILES, SEGMENTS
    from training import data

    t = np.arange(3 * 16_000) / 16_000
    left = (0.5 * np.sin(2 * np.pi * 440 * t) * 32767).astype(np.int16)
    stereo = np.stack([left, np.zeros_like(left)], axis=1)
    call = tmp_path / "call.wav"
    with wave.open(str(call), "wb") as handle:
        handle.setnchannels(2)
        handle.setsampwidth(2)
        handle.setframerate(16_000)
        handle.writeframes(stereo.tobytes())
    now = dt.datetime(2026, 11, 20, tzinfo=dt.UTC)
    blank = {name: None for name in SEGMENTS.names}
    rows = [
        blank
        | {
            "recording_id": f"rec-{channel}",
            "call_id": "call",
            "source_uri": str(call),
            "member": "",
            "channel": channel,
            "segment_id": f"rec-{channel}-{i:06d}",
            "segment_index": i,
            "start_s": float(i),
            "end_s": float(i) + 1.0,
            "text": f"words {channel} {i}",
            "emotion": "angry",
            "emotion_confidence": 0.3,
            "commit_id": "c1",
        }
        for channel in (1, 0)
        for i in (1, 0)
    ]
    rows.append(
        blank
        | {
            "recording_id": "m",
            "call_id": "arch",
            "source_uri": "/data/calls.tar",
            "member": "a.wav",
            "segment_id": "m-000000",
            "segment_index": 0,
            "start_s": 0.0,
            "end_s": 1.0,
            "text": "x",
            "emotion": "sad",
            "emotion_confidence": 0.2,
            "commit_id": "c1",
        }
    )
    out = tmp_path / "out"
    tables = OutputTables(str(out))
    tables.append("segments", pa.Table.from_pylist(rows, schema=SEGMENTS), "t", 1)
    ledger = [
        {"call_id": c, "source_uri": u, "member": m, "commit_id": "c1", "committed_at": now}
        for c, u, m in (("call", str(call), ""), ("arch", "/data/calls.tar", "a.wav"))
    ]
    tables.append("files", pa.Table.from_pylist(ledger, schema=FILES), "t", 1)

    examples = list(data.from_annotations(str(out), "true", channel_speakers=["agent", "customer"]))
    member = [e for e in examples if e.member]
    assert [(e.audio_uri, e.member, e.recording) for e in member] == [
        ("/data/calls.tar", "a.wav", "/data/calls.tar!a.wav")
    ]
    examples = [e for e in examples if not e.member]
    assert [(e.channel, e.start_s, e.speaker) for e in examples] == [
        (0, 0.0, "agent"),
        (0, 1.0, "agent"),
        (1, 0.0, "customer"),
        (1, 1.0, "customer"),
    ]
    decoded = []
    real = data._source_clips
    monkeypatch.setattr(
        data,
        "_source_clips",
        lambda uri, wanted, audio=None, s3=None: (
            decoded.append(uri) or real(uri, wanted, audio, s3)
        ),
    )
    audios = data.load_audios(examples)
    assert decoded == [str(call)]  # one decode for four segments of two channels
    assert all(a.shape == (16_000,) for a in audios)
    rms = [float(np.sqrt(np.mean(a**2))) for a in audios]
    assert rms[0] > 0.3 and rms[1] > 0.3  # the tone's channel, not a mix (a mix: 0.18)
    assert rms[2] < 1e-4 and rms[3] < 1e-4  # the silent channel


def test_synthetic_corpora_that_separate_wording_and_prosody(tmp_path):
    """prosody: every emotion speaks the same sentences (only the sound differs); wording: the
    sentences differ and every clip is spoken with the same neutral prosody, so clips of the same
    sentence length last about as long whatever the emotion."""
    import numpy as np

    from training.data import load_audio, read_manifest
    from training.synthetic_corpora import SYNTH_WORDS, synthetic_corpus

    kw = {"voices": ["en-us", "en-gb"], "test_voices": 1, "per_class": 2}
    prosody = read_manifest(synthetic_corpus(tmp_path / "p", carries="prosody", **kw))
    wording = read_manifest(synthetic_corpus(tmp_path / "w", carries="wording", **kw))
    texts = {label: {e.transcript for e in prosody if e.label == label} for label in SYNTH_WORDS}
    assert all(t == set(SYNTH_WORDS["neutral"][:2]) for t in texts.values())
    assert {e.transcript for e in wording if e.label == "angry"} == set(SYNTH_WORDS["angry"][:2])

    # Prosody carries the emotion in one corpus and not the other: seconds per word of an angry
    # (fast) clip against a sad (slow) one.
    def pace(examples, label):
        return np.mean(
            [
                len(load_audio(e)) / 16_000 / len(e.transcript.split())
                for e in examples
                if e.label == label
            ]
        )

    assert pace(prosody, "sad") > 1.5 * pace(prosody, "angry")
    assert abs(pace(wording, "sad") / pace(wording, "angry") - 1) < 0.3
    with pytest.raises(ValueError, match="carries"):
        synthetic_corpus(tmp_path / "x", carries="tone")


def test_clips_decoded_in_one_streamed_pass_equal_the_whole_decode(tmp_path, monkeypatch):
    """A manifest's clips of one long source, listed out of order (as a shuffled manifest lists
    them): the source is decoded once for all of them, and each clip equals the same span cut
    from the whole decoded file, sample for sample, for a 44.1 kHz stereo file (resampled) as
    for any; the pass stops after the last span."""
    import wave

    import numpy as np

    from annotator.audio import decode
    from training import data
    from training.data import Example

    rng = np.random.default_rng(0)
    source = tmp_path / "long.wav"
    with wave.open(str(source), "wb") as out:
        out.setnchannels(2)
        out.setsampwidth(2)
        out.setframerate(44_100)
        out.writeframes(rng.normal(0, 3000, (44_100 * 30, 2)).astype(np.int16).tobytes())
    spans = [(12.5, 14.0, None), (1.0, 2.25, 0), (20.0, 21.5, 1), (1.0, 2.25, 1)]
    examples = [
        Example(str(source), "x", "angry", start_s=a, end_s=b, channel=c) for a, b, c in spans
    ]
    whole = decode.decode_source(str(source))
    calls, blocks = [], []
    real_clips, real_iter = data._source_clips, decode.iter_decoded
    monkeypatch.setattr(
        data,
        "_source_clips",
        lambda uri, w, audio=None, s3=None: calls.append(uri) or real_clips(uri, w, audio, s3),
    )

    def counted(*args, **kwargs):
        for block in real_iter(*args, **kwargs):
            blocks.append(block.shape[1])
            yield block

    monkeypatch.setattr(decode, "iter_decoded", counted)
    clips = data.load_audios(examples)
    assert calls == [str(source)]
    for (a, b, c), clip in zip(spans, clips, strict=True):
        cut = whole[:, round(a * 16_000) : round(b * 16_000)]
        expected = cut.mean(axis=0) if c is None else cut[c]
        np.testing.assert_array_equal(clip, expected.astype(np.float32))
    assert sum(blocks) < whole.shape[1] * 0.8  # stopped after 21.5 s of 30
