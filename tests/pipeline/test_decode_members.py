"""An archive read once by one decode task, its members decoded by many (pipeline/decode.py,
``members_apart``; graph.decoded)."""

from __future__ import annotations

import re
import tarfile

import pyarrow as pa
import pytest

from annotator.config import load_config
from annotator.pipeline.decode import decode, decode_members
from annotator.pipeline.inputs import DoneSet


def _inputs(*uris: str) -> pa.Table:
    return pa.table({"uri": list(uris), "skipped": [0] * len(uris)})


def _key(row: dict) -> tuple:
    return (row["call_id"], row["kind"], row["recording_id"] or "", row["segment_index"] or 0)


@pytest.fixture(scope="module")
def archive(corpus, tmp_path_factory):
    """A tar of six members: the corpus's loose files and its tar's calls, renamed."""
    root, _ = corpus
    path = tmp_path_factory.mktemp("archive") / "night.tar"
    with tarfile.open(root / "calls.tar") as calls, tarfile.open(path, "w") as out:
        for info in calls.getmembers():
            out.addfile(info, calls.extractfile(info))
        for name in ("ep1.wav", "ep2.mp3", "ep3.flac", "broken.wav"):
            out.add(root / "loose" / name, arcname=f"loose/{name}")
    return path


def test_members_decoded_apart_give_the_rows_decoded_in_place(archive, small_home):
    """The same rows, member for member (windows with their audio and spans, errors, each
    member's file_done with its counts), whether the archive's task decodes its members or
    hands them on as bytes, each decoded by a task of its own."""
    config = load_config(None, models={"home": str(small_home)})
    in_place = pa.concat_tables(decode(_inputs(str(archive)), config, probing=False)).to_pylist()
    handed = pa.concat_tables(
        decode(_inputs(str(archive)), config, probing=False, members_apart=True)
    )
    kinds = handed["kind"].to_pylist()
    assert kinds.count("member") == 6 and "window" not in kinds
    members = handed.filter(pa.compute.equal(handed["kind"], "member"))
    apart = handed.filter(pa.compute.not_equal(handed["kind"], "member")).to_pylist()
    for i in range(members.num_rows):  # one member a block, as the graph splits them
        apart += pa.concat_tables(decode_members(members.slice(i, 1), config, False)).to_pylist()
    assert sorted(apart, key=_key) == sorted(in_place, key=_key)
    assert sum(r["kind"] == "window" for r in apart) >= 5
    assert any(r["kind"] == "error" and r["member"] == "loose/broken.wav" for r in apart)


def test_a_member_already_done_is_neither_read_nor_handed_on(archive, small_home):
    from annotator.audio.sources import recording_id

    config = load_config(None, models={"home": str(small_home)})
    done = DoneSet([recording_id(str(archive), "loose/ep2.mp3", None)])
    rows = pa.concat_tables(
        decode(_inputs(str(archive)), config, done, probing=False, members_apart=True)
    ).to_pylist()
    handed = [r["member"] for r in rows if r["kind"] == "member"]
    assert "loose/ep2.mp3" not in handed and len(handed) == 5
    (skipped,) = [r for r in rows if r["member"] == "loose/ep2.mp3"]
    assert skipped["kind"] == "file_done" and skipped["skipped"] == 1


def test_the_graph_reads_an_archive_in_one_task_and_decodes_its_members_in_many(
    archive, small_home, ray_local
):
    from annotator.pipeline.graph import decoded

    config = load_config(None, models={"home": str(small_home)})
    ds = decoded(config, [str(archive)])
    rows = pa.concat_tables(list(ds.iter_batches(batch_format="pyarrow", batch_size=None)))
    kinds = rows["kind"].to_pylist()
    assert "member" not in kinds
    done = {r["member"] for r in rows.to_pylist() if r["kind"] == "file_done"}
    assert done == {
        "",
        "calls/c1.wav",
        "calls/c2.ogg",
        *(f"loose/{n}" for n in ("ep1.wav", "ep2.mp3", "ep3.flac", "broken.wav")),
    }
    stats = ds.stats()
    tasks = {
        op: int(n)
        for op, n in re.findall(
            r"Operator \d+ [^:]*?\b(decode_members|decode)\b[^:]*: (\d+) tasks", stats
        )
    }
    assert tasks["decode"] == 1, stats  # one input, one task: the archive is read once
    assert tasks["decode_members"] >= 6, stats  # a task a member (and one for the archive's end)
