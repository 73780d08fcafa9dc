"""sources → decode → segment on real speech (espeak-ng), real archives and a real S3 API."""

from __future__ import annotations

import io
import itertools
import tarfile
import zipfile

import numpy as np
import pytest

from annotator.audio.decode import iter_decoded
from annotator.audio.ingest import IngestError, RecordingDone, Segment, ingest
from annotator.audio.sources import iter_sources
from annotator.audio.synth import FORMATS, encode, silence, speak
from annotator.config import AudioConfig, S3Config
from tests.factories import upload_dir

SR = 16_000
LOCAL = S3Config()
UTTERANCES = [
    "Good morning, thank you for calling the support line.",
    "I have been waiting for my parcel for three weeks now.",
    "Let me check the order number for you.",
]
GAP_S = 1.5


def spoken(utterances=UTTERANCES, gap_s=GAP_S, lead_s=0.5):
    """Speech with known silences: the audio and the (start, end) seconds of each utterance."""
    parts, spans, t = [silence(lead_s)], [], lead_s
    for text in utterances:
        voice = speak(text)
        loud = np.flatnonzero(np.abs(voice) > 0.01)
        voice = voice[loud[0] : loud[-1] + 1]  # espeak pads its clips with silence
        spans.append((t, t + len(voice) / SR))
        parts += [voice, silence(gap_s)]
        t += len(voice) / SR + gap_s
    return np.concatenate(parts), spans


@pytest.fixture(scope="module")
def speech():
    return spoken()


def run(uri, audio=None, s3=LOCAL):
    items = list(ingest(str(uri), audio or AudioConfig(), s3))
    return (
        [i for i in items if isinstance(i, Segment)],
        [i for i in items if isinstance(i, RecordingDone)],
        [i for i in items if isinstance(i, IngestError)],
    )


@pytest.mark.parametrize("ending", sorted(FORMATS))
def test_every_format_decodes_to_16k_with_the_source_duration(tmp_path, speech, ending):
    audio, _ = speech
    path = encode(audio, tmp_path / f"clip{ending}")
    decoded = np.concatenate(list(iter_decoded(str(path))), axis=1)
    assert decoded.dtype == np.float32
    assert abs(decoded.shape[1] / SR - len(audio) / SR) <= 0.020
    # Really the speech, not silence or noise: correlated with the source at its loud parts.
    assert np.abs(decoded).max() > 0.05


def _inside(t, spans, margin=0.05):
    return any(s + margin < t < e - margin for s, e in spans)


def test_boundaries_fall_in_silences_and_ids_are_deterministic(tmp_path, speech):
    audio, spans = speech
    path = encode(audio, tmp_path / "talk.flac")
    segments, done, errors = run(path)
    assert not errors
    assert len(segments) == len(UTTERANCES)
    for seg in segments:
        assert not _inside(seg.start_s, spans) and not _inside(seg.end_s, spans)
    # every utterance is inside one segment
    for s, e in spans:
        assert any(seg.start_s <= s + 0.05 and seg.end_s >= e - 0.05 for seg in segments)
    assert [s.segment_id for s in segments] == [
        f"{done[0].recording.recording_id}-{i:06d}" for i in range(3)
    ]
    again, _, _ = run(path)
    assert [(s.segment_id, s.start_s, s.end_s) for s in again] == [
        (s.segment_id, s.start_s, s.end_s) for s in segments
    ]
    assert done[0].n_segments == 3 and done[0].ok
    assert abs(done[0].duration_s - len(audio) / SR) < 0.001


def test_long_input_is_windowed_without_cutting_speech(tmp_path):
    """Small windows (10 s) over 40+ s of speech: segments still begin and end in silences."""
    audio, spans = spoken(UTTERANCES * 4, gap_s=1.2)
    path = encode(audio, tmp_path / "long.wav")
    config = AudioConfig(chunk_s=10, max_segment_s=2.5)
    segments, _, errors = run(path, config)
    assert not errors
    assert all(s.end_s - s.start_s <= 2.5 + 1e-6 for s in segments)
    # Long utterances must be split at max_segment_s, but never at a window edge inside speech
    # except for that split: every boundary inside speech is a forced split of a >2.5 s span.
    covered = sum(s.end_s - s.start_s for s in segments)
    assert covered >= sum(e - s for s, e in spans) * 0.95
    ordered = sorted(segments, key=lambda s: s.start_s)
    assert all(a.end_s <= b.start_s + 1e-6 for a, b in itertools.pairwise(ordered))
    assert [s.index for s in segments] == list(range(len(segments)))


def test_split_call_gives_one_recording_per_channel(tmp_path):
    agent, customer = speak(UTTERANCES[0]), speak(UTTERANCES[1])
    n = len(agent) + len(customer) + 3 * SR
    stereo = np.zeros((2, n), dtype=np.float32)
    stereo[0, SR // 2 : SR // 2 + len(agent)] = agent
    stereo[1, n - SR // 2 - len(customer) : n - SR // 2] = customer
    path = encode(stereo, tmp_path / "call.wav")
    segments, done, errors = run(path, AudioConfig(channels="split"))
    assert not errors
    assert len(done) == 2 and {d.recording.channel for d in done} == {0, 1}
    assert len({d.recording.recording_id for d in done}) == 2
    assert len({d.recording.call_id for d in done}) == 1
    by_channel = {c: [s for s in segments if s.recording.channel == c] for c in (0, 1)}
    agent_end = (SR // 2 + len(agent)) / SR
    customer_start = (n - SR // 2 - len(customer)) / SR
    assert by_channel[0] and all(s.end_s <= agent_end + 0.3 for s in by_channel[0])
    assert by_channel[1] and all(s.start_s >= customer_start - 0.3 for s in by_channel[1])
    _, mixed_done, _ = run(path)
    assert len(mixed_done) == 1 and mixed_done[0].recording.channel is None
    assert mixed_done[0].recording.recording_id == done[0].recording.call_id


def _tar(path, members: dict[str, bytes], gz=False):
    with tarfile.open(path, "w:gz" if gz else "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture(scope="module")
def clip_bytes(tmp_path_factory, speech):
    root = tmp_path_factory.mktemp("clips")
    audio, _ = speech
    return {e: encode(audio, root / f"c{e}").read_bytes() for e in (".wav", ".mp3", ".flac")}


def test_each_bad_input_gives_one_typed_error_and_good_ones_still_segment(tmp_path, clip_bytes):
    d = tmp_path / "inbox"
    d.mkdir()
    (d / "good.mp3").write_bytes(clip_bytes[".mp3"])
    (d / "empty.wav").write_bytes(b"")
    (d / "notes.wav").write_bytes(b"not audio at all, just text " * 50)
    (d / "cut.mp3").write_bytes(clip_bytes[".mp3"][: len(clip_bytes[".mp3"]) // 2])
    encode(silence(4.0), d / "quiet.wav")
    _tar(
        d / "box.tar.gz",
        {
            "calls/a.flac": clip_bytes[".flac"],
            "calls/broken.wav": b"RIFF" + b"\x00" * 300,
            "../escape.wav": clip_bytes[".wav"],
            "readme.txt": b"hello",
        },
        gz=True,
    )
    with zipfile.ZipFile(d / "pack.zip", "w") as zf:
        zf.writestr("b.wav", clip_bytes[".wav"])
    (d / "huge.tar").write_bytes(
        _tar(tmp_path / "h.tar", {"x.wav": clip_bytes[".wav"]}).read_bytes()
    )

    config = AudioConfig(
        max_archive_bytes=len(clip_bytes[".flac"]) + 300 + len(clip_bytes[".wav"]) + 100
    )
    uris = list(iter_sources([str(d)], config, LOCAL))
    results = {u.rsplit("/", 1)[1]: run(u, config) for u in uris}
    errors = {
        name: [(e.member, e.stage, e.error_type) for e in r[2]] for name, r in results.items()
    }
    assert errors["empty.wav"] == [("", "decode", "empty_file")]
    assert errors["notes.wav"] == [("", "decode", "not_audio")]
    assert errors["cut.mp3"] == [("", "decode", "truncated")]
    assert errors["quiet.wav"] == [("", "segment", "no_speech")]
    assert sorted(errors["box.tar.gz"]) == [
        ("", "archive", "unsafe_member"),
        ("calls/broken.wav", "decode", "not_audio"),
    ]
    assert errors["good.mp3"] == [] and errors["pack.zip"] == []
    # huge.tar alone is within the cap; shrink the cap to see it refused whole.
    small_cap = AudioConfig(max_archive_bytes=1000)
    assert [(e.stage, e.error_type) for e in run(d / "huge.tar", small_cap)[2]] == [
        ("archive", "archive_too_large")
    ]
    assert not run(d / "huge.tar", small_cap)[0]
    # The good inputs beside the bad ones yield their speech.
    for name in ("good.mp3", "pack.zip", "huge.tar"):
        assert len(results[name][0]) == len(UTTERANCES), name
    box_segments = results["box.tar.gz"][0]
    assert {s.recording.member for s in box_segments} == {"calls/a.flac"}
    quiet_done = results["quiet.wav"][1]
    assert quiet_done[0].n_segments == 0 and quiet_done[0].ok


def test_missing_input_is_reported_not_dropped(tmp_path):
    uris = list(
        iter_sources([str(tmp_path / "nope.wav"), str(tmp_path / "*.mp3")], AudioConfig(), LOCAL)
    )
    assert len(uris) == 2
    assert [e.error_type for u in uris for e in run(u)[2]] == ["not_found", "not_found"]


def test_local_and_s3_give_identical_segments(tmp_path, clip_bytes, s3_server):
    root = tmp_path / "corpus"
    (root / "sub").mkdir(parents=True)
    (root / "a.wav").write_bytes(clip_bytes[".wav"])
    (root / "sub" / "b.mp3").write_bytes(clip_bytes[".mp3"])
    _tar(root / "c.tar", {"m/one.flac": clip_bytes[".flac"]})
    upload_dir(s3_server, root, "corpus/")

    def collect(uris, s3, prefix):
        out = []
        for uri in iter_sources(uris, AudioConfig(), s3):
            for seg in run(uri, s3=s3)[0]:
                out.append(
                    (
                        uri.removeprefix(prefix),
                        seg.recording.member,
                        seg.index,
                        seg.start_s,
                        seg.end_s,
                        seg.audio.tobytes(),
                    )
                )
        return out

    local = collect([str(root)], LOCAL, str(root))
    remote = collect(["s3://corpus/"], s3_server, "s3://corpus")
    assert len(local) == 3 * len(UTTERANCES)
    assert local == remote
