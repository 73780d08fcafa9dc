"""The inputs stream: S3 listed page by page, committed files skipped in bulk, the done-set
looked up without a Python set."""

from __future__ import annotations

import pyarrow as pa

from annotator.audio.sources import iter_sources, recording_id
from annotator.config import AudioConfig, S3Config
from annotator.pipeline import inputs
from annotator.pipeline.inputs import DoneSet, listing_blocks
from tests.factories import make_bucket, s3_filesystem


def test_done_set_holds_exactly_its_ids():
    ids = [recording_id(f"/archive/{i}.wav") for i in range(500)]
    done = DoneSet(ids[:250] + ids[:10])  # duplicates collapse
    assert len(done) == 250 and done.ids.dtype == "uint64"
    assert all(i in done for i in ids[:250])
    assert not any(i in done for i in ids[250:])
    assert "0" * 16 not in DoneSet()


def test_listing_hands_on_files_to_do_and_counts_committed_ones(tmp_path, monkeypatch):
    monkeypatch.setattr(inputs, "SKIPPED_PER_ROW", 3)
    for i in range(8):
        (tmp_path / f"{i}.wav").write_bytes(b"")
    (tmp_path / "calls.tar").write_bytes(b"")
    (tmp_path / "notes.txt").write_bytes(b"")
    files = sorted(str(p) for p in tmp_path.glob("*.wav"))
    done = DoneSet(recording_id(f) for f in [*files[:7], str(tmp_path / "calls.tar")])
    rows = pa.concat_tables(
        listing_blocks(str(tmp_path), AudioConfig(), S3Config(), done)
    ).to_pylist()
    # The archive is opened whatever the ledger says: its members are the units of commit.
    assert [r["uri"] for r in rows if not r["skipped"]] == [files[7], str(tmp_path / "calls.tar")]
    # Committed files are counted, not handed on: one row per SKIPPED_PER_ROW of them.
    assert [r["skipped"] for r in rows if r["skipped"]] == [3, 3, 1]
    assert all(r["uri"] == "" for r in rows if r["skipped"])


def test_s3_prefix_is_listed_page_by_page_in_key_order(s3_server, monkeypatch):
    from annotator.audio import sources

    monkeypatch.setattr(sources, "S3_PAGE", 7)
    make_bucket(s3_server, "listing")
    fs = s3_filesystem(s3_server)
    keys = [f"listing/night/{d}/{i:03d}.wav" for d in ("a", "b") for i in range(12)]
    keys += ["listing/night/c.tar", "listing/night/readme.txt", "listing/other/x.wav"]
    for key in keys:
        fs.pipe_file(key, b"")
    import fsspec.asyn

    pages: list[int] = []
    real_sync = fsspec.asyn.sync

    def counting_sync(loop, func, *args, **kwargs):
        out = real_sync(loop, func, *args, **kwargs)
        if func.__name__ == "page":
            pages.append(len(out))
        return out

    monkeypatch.setattr(fsspec.asyn, "sync", counting_sync)
    found = list(iter_sources(["s3://listing/night"], AudioConfig(), s3_server))
    assert found == [f"s3://{k}" for k in sorted(keys) if "night" in k and "readme" not in k]
    # One page of at most S3_PAGE keys in memory at a time, and nothing cached the whole prefix.
    assert pages == [7, 7, 7, 5, 0]
    cached = sources.filesystem("s3://listing", s3_server)[0].dircache
    assert not [k for k in cached if k.startswith("listing/night")]
    # A prefix with nothing under it is handed on as it is, to be reported as not found.
    assert list(iter_sources(["s3://listing/nothing"], AudioConfig(), s3_server)) == [
        "s3://listing/nothing"
    ]
