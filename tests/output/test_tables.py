"""The output's Delta tables: exactly once through kills and concurrent writers, compaction,
conversion of the old layout, and a second engine reading the same rows.

Rows come from annotator.pipeline.synthetic through the real Sink in a subprocess (what the kills
hit); no models are needed to prove what the commit protocol promises.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pyarrow as pa
import pytest

from annotator.output.tables import OutputTables
from annotator.query import Annotations, QueryError

FILES = 240
SEGMENTS = 8
ERROR_EVERY = 40
WRITER = [sys.executable, "-m", "annotator.pipeline.synthetic"]


def writer(out, first=0, files=FILES, kill_at=None, rerun=False, endpoint=None, max_files=60):
    """The synthetic writer (the real Sink), commits of ``max_files``, started; stdout and
    stderr piped."""
    env = dict(os.environ)
    env.pop("ANNOTATOR_KILL_AT", None)
    if kill_at:
        env["ANNOTATOR_KILL_AT"] = kill_at
    cmd = [
        *WRITER,
        str(out),
        f"--first={first}",
        f"--files={files}",
        f"--segments={SEGMENTS}",
        f"--error-every={ERROR_EVERY}",
        "--every-s=1e9",
        f"--max-files={max_files}",
        "--batch-rows=45",  # about five files a batch: commits of max_files files
    ]
    cmd += ["--skip-committed"] if rerun else []
    cmd += [f"--endpoint-url={endpoint}"] if endpoint else []
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def write(out, **options) -> subprocess.CompletedProcess:
    """:func:`writer`, run to its end."""
    proc = writer(out, **options)
    stdout, stderr = proc.communicate()
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def view(out, s3=None) -> dict[str, dict]:
    """What `annotator query` shows: segment_id → the row's content; errors; files. Checks that
    no segment, error or file appears twice."""
    ann = Annotations(out, s3)
    segments = ann.arrow(
        "SELECT segment_id, text, start_s, emotion, emotion_probs FROM segments"
    ).to_pylist()
    errors = ann.arrow("SELECT call_id, message FROM errors").to_pylist()
    files = ann.arrow("SELECT call_id, segments, errors FROM files").to_pylist()
    ann.close()
    ids = [s["segment_id"] for s in segments]
    assert len(ids) == len(set(ids)), "a segment appears twice"
    assert len({e["call_id"] for e in errors}) == len(errors), "an error appears twice"
    assert len({f["call_id"] for f in files}) == len(files), "a file appears twice"
    return {
        "segments": {s.pop("segment_id"): s for s in segments},
        "errors": sorted((e["call_id"], e["message"]) for e in errors),
        "files": sorted((f["call_id"], f["segments"], f["errors"]) for f in files),
    }


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One uninterrupted run over all the files."""
    out = tmp_path_factory.mktemp("reference") / "out"
    done = write(out)
    assert done.returncode == 0, done.stderr
    rows = view(out)
    assert len(rows["files"]) == FILES
    assert len(rows["segments"]) == (FILES - FILES // ERROR_EVERY) * SEGMENTS
    assert len(rows["errors"]) == FILES // ERROR_EVERY
    return out, rows


@pytest.mark.parametrize(
    "kill_at",
    [
        "commit:start",  # rows gathered, nothing written
        "commit:segments",  # segments appended, errors and ledger not
        "commit:errors",  # segments and errors appended, ledger not
        "commit:files@2",  # two commits done, the rest not
        "commit:segments@3",  # in the third commit, after two whole ones
    ],
)
def test_sigkill_at_each_point_of_a_commit_then_rerun_gives_the_same_rows(
    kill_at, reference, tmp_path
):
    out = tmp_path / "out"
    killed = write(out, kill_at=kill_at)
    assert killed.returncode == -9, killed.stderr  # really killed there, not finished
    partial = view(out) if out.exists() else {"files": []}
    # Killed in the first commit: nothing is committed; later: the two whole commits (of at
    # least max_files files each) are.
    if "@" in kill_at:
        assert 2 * 60 <= len(partial["files"]) < FILES
    else:
        assert len(partial["files"]) == 0
    again = write(out, rerun=True)
    assert again.returncode == 0, again.stderr
    assert view(out) == reference[1]


def test_sigkill_during_compaction_and_vacuum_loses_and_duplicates_nothing(reference, tmp_path):
    import shutil

    out = tmp_path / "out"
    shutil.copytree(reference[0], out)
    before = len(OutputTables(str(out)).file_uris("segments"))
    assert before == FILES // 60  # one file per commit
    compact = [
        sys.executable,
        "-c",
        "import sys; from annotator.output.compact import compact; compact(sys.argv[1], "
        "retain_hours=0)",
        str(out),
    ]
    for point in ("compact:segments", "vacuum:segments", "compact:files"):
        env = dict(os.environ, ANNOTATOR_KILL_AT=point)
        killed = subprocess.run(compact, env=env, capture_output=True, text=True)
        assert killed.returncode == -9, killed.stderr
        assert view(out) == reference[1]
    done = subprocess.run(compact, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert view(out) == reference[1]
    tables = OutputTables(str(out))
    assert len(tables.file_uris("segments")) == 1 < before
    # Vacuum removed the small files: only the snapshot's files are left beside the log.
    on_disk = [p for p in (out / "segments").glob("*.parquet")]
    assert len(on_disk) == 1
    # A run after compaction appends as before and the rows stay exact.
    rerun = write(out, rerun=True)
    assert rerun.returncode == 0 and "committed 0 files" in rerun.stdout


def test_compaction_while_a_run_writes_loses_and_duplicates_nothing(reference, tmp_path):
    """`annotator compact` over and over while a writer commits (commits of 10 files): however
    the two interleave, the rows are the uninterrupted run's. Vacuum keeps files younger than
    its retention (here the CLI's minimum, 1 h), so the writer's uncommitted files are safe."""
    from annotator.output.compact import compact

    out = tmp_path / "out"
    proc = writer(out, max_files=10)
    compactions = 0
    while proc.poll() is None:
        if OutputTables(str(out)).table("files") is not None:
            compact(str(out), retain_hours=1)
            compactions += 1
    assert proc.wait() == 0, proc.stderr.read()
    compact(str(out), retain_hours=1)
    print(f"{compactions} compactions while the writer ran")
    assert view(out) == reference[1]
    assert len(OutputTables(str(out)).file_uris("segments")) == 1


@pytest.mark.parametrize("where", ["local", "s3"])
def test_two_writers_at_once_lose_nothing_and_duplicate_nothing(
    where, reference, tmp_path, s3_server
):
    """Two runs over overlapping halves at the same time (commits of 10 files race each other):
    every file once, with the rows one run alone gives. Which writer wins a file does not
    matter: both wrote the same rows for it."""
    from tests.factories import make_bucket

    if where == "s3":
        make_bucket(s3_server, "two-writers")
        out, endpoint, s3 = "s3://two-writers/out", s3_server.endpoint_url, s3_server
    else:
        out, endpoint, s3 = tmp_path / "out", None, None
    procs = [
        writer(out, first=first, files=count, endpoint=endpoint, max_files=10)
        for first, count in ((0, FILES * 2 // 3), (FILES // 3, FILES - FILES // 3))
    ]
    for proc in procs:
        assert proc.wait() == 0, proc.stderr.read()
    assert view(out, s3) == reference[1]
    # Both runs committed the overlap: the ledger holds it twice, the views once.
    ledger = OutputTables(str(out), s3).read("files", ["call_id"])
    assert ledger.num_rows == FILES + FILES // 3


def test_a_second_engine_reads_the_same_rows(reference):
    """DataFusion (delta-rs's own query engine) over the Delta tables, with the join the views
    document, gives the rows `annotator query` gives."""
    from deltalake import QueryBuilder

    out, _ = reference
    tables = OutputTables(str(out))
    qb = QueryBuilder()
    qb.register("segments", tables.table("segments"))
    qb.register("files", tables.table("files"))
    theirs = pa.table(
        qb.execute(
            "SELECT s.segment_id, s.text, s.emotion, s.emotion_confidence FROM segments s "
            "JOIN (SELECT call_id, commit_id, row_number() OVER (PARTITION BY call_id "
            "ORDER BY committed_at DESC, commit_id DESC) AS n FROM files) f "
            "ON s.call_id = f.call_id AND s.commit_id = f.commit_id AND f.n = 1 "
            "ORDER BY s.segment_id"
        ).read_all()
    )
    ann = Annotations(out)
    ours = ann.arrow(
        "SELECT segment_id, text, emotion, emotion_confidence FROM segments ORDER BY segment_id"
    )
    assert theirs.num_rows == ours.num_rows == len(reference[1]["segments"])
    assert theirs.to_pylist() == ours.to_pylist()


def test_the_old_layout_is_refused_then_converted_in_place(tmp_path):
    """An output written by annotator 0.1's sink: query and annotate refuse it and name the
    command; `annotator convert` turns it into the tables with the same rows, removing the old
    objects, and a second convert has nothing to do."""
    from click.testing import CliRunner

    from annotator.cli import main
    from annotator.pipeline import synthetic
    from benchmarks.legacy_sink import LegacySink

    old, new = tmp_path / "old", tmp_path / "new"
    legacy = LegacySink(str(old), None, "20261101T000000Z-legacy")
    for batch in synthetic.batches(0, 50, SEGMENTS, error_every=ERROR_EVERY):
        legacy.add(batch)
    assert legacy.files == 50
    with pytest.raises(QueryError, match="annotator convert"):
        Annotations(old)
    assert write(new, files=50).returncode == 0
    result = CliRunner().invoke(main, ["convert", str(old)])
    assert result.exit_code == 0, result.output
    assert "converted 50 files" in result.output
    assert not (old / "_ledger").exists()
    assert not [p for p in (old / "segments").rglob("*.parquet") if p.parent.name != "segments"]
    ours, reference = view(old), view(new)
    assert ours["segments"] == reference["segments"]
    assert ours["errors"] == reference["errors"] and ours["files"] == reference["files"]
    again = CliRunner().invoke(main, ["convert", str(old)])
    assert "converted 0 files" in again.output
    assert view(old) == ours


def test_compacted_files_have_bounded_row_groups(reference, tmp_path, monkeypatch):
    """Compaction writes row groups of at most ``ROW_GROUP_ROWS`` rows (a reader holds a row
    group per thread: benchmarks/query_export.py), and the rows stay exact."""
    import shutil

    import pyarrow.parquet as pq

    from annotator.output import compact as compaction

    out = tmp_path / "out"
    shutil.copytree(reference[0], out)
    monkeypatch.setattr(compaction, "ROW_GROUP_ROWS", 50)
    compaction.compact(str(out), retain_hours=0)
    (uri,) = OutputTables(str(out)).file_uris("segments")
    meta = pq.ParquetFile(uri.removeprefix("file://")).metadata
    sizes = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
    assert len(sizes) > 1 and max(sizes) <= 50 and sum(sizes) == meta.num_rows
    assert view(out) == reference[1]
