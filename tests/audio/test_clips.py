"""Clips cut from archive members (annotator/audio/clips.py), as training and review read them:
equal, sample for sample, to the same spans of the extracted files; each archive read once and
each member asked for decoded once; the members ingest refuses refused here too."""

from __future__ import annotations

import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest

from annotator.audio import clips as clips_module
from annotator.audio import decode
from annotator.audio.clips import source_clips
from annotator.audio.decode import AudioError
from annotator.audio.synth import encode
from annotator.config import AudioConfig
from training import common
from training.data import Example, load_audios

MEMBERS = ("night/call-a.wav", "night/call-b.flac", "night/call-c.wav")


@pytest.fixture(scope="module")
def delivered(tmp_path_factory) -> tuple[Path, dict[str, Path]]:
    """Three stereo calls (noise, different per channel), extracted in a folder and packed as a
    tar and a zip beside a text file the archives also hold."""
    root = tmp_path_factory.mktemp("delivered")
    rng = np.random.default_rng(7)
    extracted = {}
    for k, name in enumerate(MEMBERS):
        stereo = rng.normal(0, 0.1, (2, 16_000 * (6 + 2 * k))).astype(np.float32)
        extracted[name] = encode(stereo, root / "extracted" / name)
    notes = root / "extracted" / "night" / "notes.txt"
    notes.write_text("not audio")
    with tarfile.open(root / "calls.tar", "w") as tar:
        for name, path in extracted.items():
            tar.add(path, arcname=name)
        tar.add(notes, arcname="night/notes.txt")
    with zipfile.ZipFile(root / "calls.zip", "w", zipfile.ZIP_DEFLATED) as archive:
        for name, path in extracted.items():
            archive.write(path, name)
        archive.write(notes, "night/notes.txt")
    return root, extracted


# (member, start_s, end_s, channel): out of order, as a shuffled manifest lists them.
ASKED = [
    ("night/call-c.wav", 7.5, 9.0, 1),
    ("night/call-a.wav", 1.0, 2.5, 0),
    ("night/call-c.wav", 0.25, 1.0, None),
    ("night/call-a.wav", 1.0, 2.5, 1),
]


@pytest.mark.parametrize("archive", ["calls.tar", "calls.zip"])
def test_member_clips_equal_the_extracted_files_and_each_member_is_decoded_once(
    delivered, archive, monkeypatch
):
    root, extracted = delivered
    uri = str(root / archive)
    examples = [
        Example(uri, "x", "sad", start_s=a, end_s=b, channel=c, member=m) for m, a, b, c in ASKED
    ]
    decoded, listed = [], []
    real_cut, real_members = clips_module.cut_spans, clips_module.iter_members
    monkeypatch.setattr(
        clips_module,
        "cut_spans",
        lambda handle, spans, name="": decoded.append(name) or real_cut(handle, spans, name),
    )
    monkeypatch.setattr(
        clips_module,
        "iter_members",
        lambda handle, name, audio: listed.append(name) or real_members(handle, name, audio),
    )
    got = load_audios(examples)
    assert listed == [uri]  # the archive opened and listed once for all four clips
    # call-a and call-c decoded once each; call-b, asked for nothing, never decoded
    assert sorted(decoded) == [f"{uri}!night/call-a.wav", f"{uri}!night/call-c.wav"]
    for (member, a, b, channel), clip in zip(ASKED, got, strict=True):
        whole = decode.decode_source(str(extracted[member]))
        cut = whole[:, round(a * 16_000) : round(b * 16_000)]
        expected = cut.mean(axis=0) if channel is None else cut[channel]
        np.testing.assert_array_equal(clip, expected.astype(np.float32))


def test_a_worker_reads_each_archive_once_per_epoch(delivered, monkeypatch):
    """Items of two archives run source by source (``epoch_loader``'s group_by): the worker's
    ClipReader holds one archive's clips at a time and reads each archive once in the epoch."""
    root, _ = delivered
    items = [
        common.Item(None, "x", 0, example=Example(str(root / a), "x", "sad", **span))
        for a in ("calls.tar", "calls.zip")
        for m in MEMBERS
        for span in ({"start_s": 0.5 * k, "end_s": 0.5 * k + 1, "member": m} for k in range(3))
    ]
    reader = common.ClipReader([i.example for i in items])
    passes = []
    real = clips_module.iter_members
    monkeypatch.setattr(
        clips_module,
        "iter_members",
        lambda handle, name, audio: passes.append(name) or real(handle, name, audio),
    )
    loader = common.epoch_loader(items, list, 3, seed=1, group_by=common.source_of)
    seen = 0
    for batch in loader:
        for item in batch:
            assert reader.audio(item.example).shape == (16_000,)
            seen += 1
    assert seen == len(items)
    assert sorted(passes) == sorted(str(root / a) for a in ("calls.tar", "calls.zip"))
    assert reader.decodes == 2


def test_archive_clips_read_from_s3_equal_the_local_ones(delivered, s3_server):
    from tests.factories import make_bucket, s3_filesystem

    root, _ = delivered
    make_bucket(s3_server, "deliveries")
    s3_filesystem(s3_server).put(str(root / "calls.zip"), "deliveries/2026-12-07/calls.zip")
    wanted = {"night/call-b.flac": [(16_000, 40_000), (0, None)]}
    remote = source_clips("s3://deliveries/2026-12-07/calls.zip", wanted, s3=s3_server)
    local = source_clips(str(root / "calls.zip"), wanted)
    for a, b in zip(remote["night/call-b.flac"], local["night/call-b.flac"], strict=True):
        np.testing.assert_array_equal(a, b)
    assert local["night/call-b.flac"][1].shape == (2, 16_000 * 8)


def test_members_ingest_refuses_are_refused_naming_them(delivered, tmp_path):
    root, extracted = delivered
    evil = tmp_path / "evil.tar"
    with tarfile.open(evil, "w") as tar:
        tar.add(extracted["night/call-a.wav"], arcname="../escape.wav")
        tar.add(extracted["night/call-a.wav"], arcname="ok.wav")
    with pytest.raises(AudioError, match="escapes the archive root"):
        source_clips(str(evil), {"../escape.wav": [(0, 100)]})
    assert source_clips(str(evil), {"ok.wav": [(0, 100)]})["ok.wav"][0].shape == (2, 100)
    with pytest.raises(AudioError, match=r"no readable member 'night/call-z\.wav'"):
        source_clips(str(root / "calls.tar"), {"night/call-z.wav": [(0, 100)]})
    small = AudioConfig(max_member_bytes=1000)
    with pytest.raises(AudioError, match="max_member_bytes"):
        source_clips(str(root / "calls.zip"), {"night/call-a.wav": [(0, 100)]}, small)
    with pytest.raises(AudioError, match="max_archive_bytes") as refused:
        source_clips(
            str(root / "calls.tar"),
            {"night/call-a.wav": [(0, 100)]},
            AudioConfig(max_archive_bytes=10_000),
        )
    assert refused.value.error_type == "archive_too_large"
    with pytest.raises(AudioError, match="not an archive"):
        source_clips(str(extracted["night/call-a.wav"]), {"night/call-a.wav": [(0, 100)]})
