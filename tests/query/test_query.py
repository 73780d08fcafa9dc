"""Views, named queries and the read-only guard, checked against pandas on the same rows."""

from __future__ import annotations

import datetime as dt

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from annotator.cli import main
from annotator.output.tables import OutputTables
from annotator.query import Annotations, QueryError, named_queries
from annotator.schema import ERRORS, FILES, RUNS, SEGMENTS
from tests.factories import upload_dir

LABELS = ["neutral", "angry", "sad", "happy"]
UTC = dt.UTC


def make_output(root, seed=0):
    """An output written with the real schemas: 6 mixed episodes and 3 split calls over 3 weeks."""
    rng = np.random.default_rng(seed)
    rows = []
    recs = [(f"ep{i}", f"ep{i}", None) for i in range(6)]
    recs += [(f"call{i}-{c}", f"call{i}", c) for i in range(3) for c in (0, 1)]
    for n, (rid, call, channel) in enumerate(recs):
        when = dt.datetime(2026, 11, 2, tzinfo=UTC) + dt.timedelta(days=7 * (n % 3), hours=n)
        t = float(rng.uniform(0, 2)) + (0.7 * (channel or 0))
        for i in range(int(rng.integers(8, 40))):
            length = float(rng.uniform(1, 12))
            probs = rng.dirichlet(np.ones(4))
            k = int(np.argmax(probs))
            rows.append(
                {
                    "run_id": "run1",
                    "recording_id": rid,
                    "call_id": call,
                    "source_uri": f"/data/{call}.wav",
                    "member": "",
                    "channel": channel,
                    "segment_id": f"{rid}-{i:06d}",
                    "segment_index": i,
                    "start_s": t,
                    "end_s": t + length,
                    "text": f"words {i}",
                    "language": "en",
                    "language_prob": 0.99,
                    "avg_logprob": -0.2,
                    "no_speech_prob": 0.01,
                    "words": [{"start": t, "end": t + 0.5, "word": "words", "prob": 0.9}],
                    "audio_only": False,
                    # Served with models.unsure_below 0.4: abstains under it.
                    "emotion": LABELS[k] if probs[k] >= 0.4 else "unsure",
                    "emotion_probs": [
                        {"label": lab, "prob": float(p)}
                        for lab, p in zip(LABELS, probs, strict=True)
                    ],
                    "emotion_confidence": float(probs[k]),
                    "bundle_version": "abc",
                    "asr_model": "tiny.en",
                    "llm_model": "small:llm",
                    "processed_at": when,
                    "commit_id": "run1-000001",
                }
            )
            t += length + float(rng.uniform(0.1, 3.0))
    seg = pa.Table.from_pylist(rows, schema=SEGMENTS)
    tables = OutputTables(str(root))
    tables.append("segments", seg, "test", 1)
    now = dt.datetime(2026, 11, 20, tzinfo=UTC)
    errs = pa.Table.from_pylist(
        [
            {
                "run_id": "run1",
                "source_uri": "/data/x.wav",
                "member": "",
                "stage": "decode",
                "error_type": "not_audio",
                "message": "m",
                "at": now,
                "call_id": "err1",
                "commit_id": "run1-000001",
            },
            {
                "run_id": "run1",
                "source_uri": "/data/y.tar",
                "member": "a.wav",
                "stage": "decode",
                "error_type": "not_audio",
                "message": "m",
                "at": now,
                "call_id": "err2",
                "commit_id": "run1-000001",
            },
            {
                "run_id": "run1",
                "source_uri": "/data/z.wav",
                "member": "",
                "stage": "segment",
                "error_type": "no_speech",
                "message": "m",
                "at": now,
                "call_id": "err3",
                "commit_id": "run1-000001",
            },
        ],
        schema=ERRORS,
    )
    tables.append("errors", errs, "test", 1)
    committed = sorted({(r["call_id"], r["source_uri"]) for r in rows}) + [
        (e["call_id"], e["source_uri"]) for e in errs.to_pylist()
    ]
    ledger = [
        {
            "call_id": call_id,
            "source_uri": uri,
            "member": "",
            "recordings": [],
            "segments": 0,
            "errors": 0,
            "duration_s": 0.0,
            "run_id": "run1",
            "commit_id": "run1-000001",
            "committed_at": now,
        }
        for call_id, uri in committed
    ]
    tables.append("files", pa.Table.from_pylist(ledger, schema=FILES), "test", 1)
    tables.append(
        "runs",
        pa.Table.from_pylist(
            [
                {
                    "run_id": "run1",
                    "config_hash": "h",
                    "annotator_version": "0.1.0",
                    "bundle_version": "abc",
                    "asr_model": "tiny.en",
                    "llm_model": "small:llm",
                    "started_at": now,
                    "finished_at": now,
                    "recordings": 12,
                    "segments": len(rows),
                    "errors": 3,
                    "audio_hours": 1.0,
                    "wall_s": 60.0,
                    "rtfx": 60.0,
                }
            ],
            schema=RUNS,
        ),
        "test",
        1,
    )
    return seg.to_pandas()


@pytest.fixture(scope="module")
def output(tmp_path_factory):
    root = tmp_path_factory.mktemp("out")
    return root, make_output(root)


@pytest.fixture(scope="module")
def ann(output):
    return Annotations(output[0])


def test_every_named_query_runs_and_has_a_header(ann):
    queries = named_queries()
    assert len(queries) >= 5
    for q in queries.values():
        assert q.answers, q.name
        ann.named(q.name).to_arrow_table()


def test_angriest_call_endings_matches_pandas(ann, output):
    _, df = output
    got = ann.named("angriest_call_endings", label="angry", last_s=60, top=100).df()
    end = df.groupby("call_id").end_s.transform("max")
    window = df[df.start_s >= end - 60].assign(dur=lambda d: d.end_s - d.start_s)
    expect = window[window.emotion == "angry"].groupby("call_id").dur.sum()
    got_map = dict(zip(got.call_id, got.label_seconds, strict=True))
    assert set(got.call_id) == set(window.call_id)
    for call, secs in expect.items():
        assert got_map[call] == pytest.approx(secs, abs=1e-3)
    top = got.call_id.iloc[0]
    assert expect[top] == pytest.approx(expect.max(), abs=1e-3)


def test_share_by_week_matches_pandas(ann, output):
    _, df = output
    got = ann.named("emotion_share_by_week", label="sad").df()
    d = df.assign(dur=df.end_s - df.start_s, sad=lambda x: np.where(x.emotion == "sad", x.dur, 0.0))
    per = d.groupby("recording_id").agg(
        sad=("sad", "sum"), dur=("dur", "sum"), at=("processed_at", "max")
    )
    per["share"] = per.sad / per.dur
    per["week"] = per["at"].dt.tz_convert("UTC").dt.to_period("W-SUN").dt.start_time
    weekly = per.groupby("week").share.agg(["count", "mean"]).reset_index()
    assert list(got.episodes) == list(weekly["count"])
    np.testing.assert_allclose(got.mean_share, weekly["mean"], atol=1e-4)


def test_unsure_segments_and_summary_match_pandas(ann, output):
    _, df = output
    got = ann.named("unsure_segments", below=0.45, top=1000).df()
    assert set(got.segment_id) == set(df[df.emotion_confidence < 0.45].segment_id)
    summary = ann.named("emotion_summary").df().set_index("emotion")
    counts = df.emotion.value_counts()
    for label, n in counts.items():
        assert summary.loc[label, "segments"] == n
    history = ann.named("run_history").df()
    assert list(history.segments) == [len(df)] and list(history.errors) == [3]
    errors = ann.named("errors_by_type").df()
    assert errors.iloc[0].error_type == "not_audio" and errors.iloc[0].errors == 2


def test_coverage_matches_pandas_and_the_report_shows_it(ann, output):
    from annotator.report.html import build_report

    root, df = output
    got = ann.named("coverage").df().set_index("emotion")
    counts = df.emotion.value_counts()
    assert 0 < counts["unsure"] < len(df)
    assert dict(got.segments) == dict(counts)
    assert got.index[-1] == "unsure"  # listed last
    coverage = 1 - counts["unsure"] / len(df)
    np.testing.assert_allclose(got.coverage, coverage, atol=1e-4)
    means = df.groupby("emotion").emotion_confidence.mean()
    np.testing.assert_allclose(got.mean_confidence, means[got.index], atol=1e-3)
    page = build_report(str(root))
    assert f"{counts['unsure']} of {len(df)} segments unsure" in page
    assert f"coverage {coverage:.1%}" in page


def test_recordings_and_turns_views(ann, output):
    _, df = output
    rec = ann.sql("SELECT * FROM recordings").df().set_index("recording_id")
    assert len(rec) == df.recording_id.nunique()
    d = df.assign(dur=df.end_s - df.start_s)
    secs = d.groupby(["recording_id", "emotion"]).dur.sum()
    for rid in ["ep0", "call1-0"]:
        assert rec.loc[rid, "segments"] == (df.recording_id == rid).sum()
        assert rec.loc[rid, "dominant_emotion"] == secs[rid].idxmax()
        shares = dict(rec.loc[rid, "emotion_shares"])
        assert shares[secs[rid].idxmax()] == pytest.approx(
            secs[rid].max() / secs[rid].sum(), abs=1e-9
        )
    turns = ann.sql("SELECT * FROM turns").df()
    # Independently: in time order within a call, a new turn starts when the channel changes
    # or the pause exceeds 1.5 s.
    assert turns.segments.sum() == len(df)
    expected = []
    for call, g in df.sort_values(["call_id", "start_s", "recording_id"]).groupby("call_id"):
        new = (g.recording_id != g.recording_id.shift()) | (g.start_s - g.end_s.shift() > 1.5)
        for _, t in g.groupby(new.cumsum()):
            expected.append((call, t.recording_id.iloc[0], len(t), round(t.start_s.min(), 6)))
    got = sorted(
        zip(turns.call_id, turns.recording_id, turns.segments, turns.start_s.round(6), strict=True)
    )
    assert got == sorted(expected)


@pytest.mark.parametrize(
    "statement",
    [
        "DROP VIEW segments",
        "COPY (SELECT * FROM segments) TO '{out}/stolen.csv'",
        "ATTACH '{out}/other.duckdb'",
        "INSTALL httpfs",
        "SELECT * FROM read_csv('/etc/passwd')",
        "SELECT * FROM read_parquet('{out}/../elsewhere.parquet')",
        "SET enable_external_access = true",
        "CREATE TABLE t AS SELECT 1",
    ],
)
def test_writes_attach_install_and_outside_reads_are_refused(ann, output, statement):
    with pytest.raises(QueryError, match=r"refused|read-only"):
        ann.sql(statement.format(out=output[0]))
    assert ann.sql("SELECT count(*) FROM segments").fetchall()[0][0] == len(output[1])


def test_s3_copy_gives_the_same_rows(output, s3_server):
    root, _ = output
    upload_dir(s3_server, root, "annotations/out/")
    remote = Annotations("s3://annotations/out", s3_server)
    local = Annotations(root)
    for name in named_queries():
        assert remote.named(name).fetchall() == local.named(name).fetchall(), name
    with pytest.raises(QueryError):
        remote.sql("SELECT * FROM read_csv('/etc/passwd')")


def test_plain_duckdb_reads_the_documented_types(output):
    root, _ = output
    con = duckdb.connect()
    query = f"DESCRIBE SELECT * FROM read_parquet('{root}/segments/**/*.parquet', hive_partitioning = false)"
    types = {row[0]: row[1] for row in con.execute(query).fetchall()}
    assert types["start_s"] == "DOUBLE"
    assert types["channel"] == "SMALLINT"
    assert types["emotion_probs"] == 'STRUCT("label" VARCHAR, prob FLOAT)[]'
    assert types["processed_at"] == "TIMESTAMP WITH TIME ZONE"
    assert list(types)[: len(SEGMENTS.names)] == SEGMENTS.names


def test_cli_query_formats_and_errors(output, tmp_path):
    root, df = output
    runner = CliRunner()
    res = runner.invoke(
        main, ["query", str(root), "SELECT count(*) AS n FROM segments", "--format", "csv"]
    )
    assert res.exit_code == 0, res.output
    assert res.output.splitlines() == ["n", str(len(df))]
    res = runner.invoke(
        main,
        [
            "query",
            str(root),
            "--name",
            "unsure_segments",
            "--param",
            "below=0.3",
            "--format",
            "parquet",
            "--output",
            str(tmp_path / "u.parquet"),
        ],
    )
    assert res.exit_code == 0, res.output
    assert pq.read_table(tmp_path / "u.parquet").num_rows == int(
        (df.emotion_confidence < 0.3).sum()
    )
    res = runner.invoke(main, ["query", str(root), "DROP VIEW segments"])
    assert res.exit_code != 0 and "read-only" in res.output
    res = runner.invoke(
        main, ["query", str(root), "--name", "unsure_segments", "--param", "nope=1"]
    )
    assert res.exit_code != 0 and "no parameter nope" in res.output
    res = runner.invoke(
        main, ["query", str(root), "--shell"], input="SELECT 40 + 2 AS x;\nDROP VIEW runs;\n.quit\n"
    )
    assert res.exit_code == 0 and "42" in res.output
    assert "read-only" in res.output


def test_an_output_written_before_bundle_kinds_reads_as_emoq_and_takes_new_kinds(tmp_path):
    """Outputs of annotator versions without ``bundle_kind`` (schema.ADDED_COLUMNS): their rows
    read as EmoQ's, and the next commit adds the column to the Delta table (schema evolution), so
    rows of two kinds sit in one queryable output."""
    from deltalake import DeltaTable, write_deltalake

    make_output(tmp_path / "new")
    new = OutputTables(str(tmp_path / "new"))
    old_root = tmp_path / "old"
    for name in ("segments", "errors", "files", "runs"):
        table = new.read(name)
        added = [c for c in ("bundle_kind", "expert_weights") if c in table.column_names]
        write_deltalake(str(old_root / name), table.drop_columns(added))
    assert "bundle_kind" not in DeltaTable(str(old_root / "segments")).schema().to_arrow().names
    ann = Annotations(str(old_root))
    assert ann.sql("SELECT DISTINCT bundle_kind FROM segments").fetchall() == [("emoq",)]
    # No bundle had experts then: the gate's weights read as NULL, not as a missing column.
    assert ann.sql("SELECT DISTINCT expert_weights FROM segments").fetchall() == [(None,)]
    assert ann.sql("SELECT DISTINCT bundle_kind FROM runs").fetchall() == [("emoq",)]
    count = ann.sql("SELECT count(*) FROM segments").fetchall()[0][0]
    ann.close()

    # A later run of another kind commits one more call.
    later = new.read("segments").slice(0, 3).to_pylist()
    for i, row in enumerate(later):
        row.update(
            call_id="call-later",
            recording_id="call-later",
            segment_id=f"call-later-{i:06d}",
            bundle_kind="otherkind",
            commit_id="run2-000001",
        )
    tables = OutputTables(str(old_root))
    tables.append("segments", pa.Table.from_pylist(later, schema=SEGMENTS), "run2", 1)
    ledger = new.read("files").slice(0, 1).to_pylist()[0]
    ledger.update(call_id="call-later", run_id="run2", commit_id="run2-000001")
    tables.append("files", pa.Table.from_pylist([ledger], schema=FILES), "run2", 1)
    assert "bundle_kind" in DeltaTable(str(old_root / "segments")).schema().to_arrow().names
    ann = Annotations(str(old_root))
    kinds = ann.sql("SELECT bundle_kind, count(*) FROM segments GROUP BY ALL ORDER BY 1").fetchall()
    assert kinds == [("emoq", count), ("otherkind", 3)]


def test_exports_stream_in_batches_and_equal_the_whole_result(output, tmp_path, monkeypatch):
    """csv, json and parquet are written as the record batches come (here 7 rows a batch, so many
    batches; Parquet row groups of two), and each file equals the same result written whole; the table format prints its
    row limit and says there is more."""
    import json

    import pandas as pd

    from annotator.query import cli as query_cli

    root, df = output
    monkeypatch.setattr(query_cli, "EXPORT_BATCH_ROWS", 7)
    monkeypatch.setattr(query_cli, "EXPORT_ROW_GROUP_ROWS", 14)
    sql = "SELECT segment_id, start_s, emotion, emotion_probs FROM segments ORDER BY segment_id"
    whole = Annotations(str(root)).sql(sql).to_arrow_table()
    assert whole.num_rows == len(df) > 3 * 7
    runner = CliRunner()
    for fmt in ("csv", "json", "parquet"):
        dest = tmp_path / f"all.{fmt}"
        res = runner.invoke(main, ["query", str(root), sql, "--format", fmt, "--output", str(dest)])
        assert res.exit_code == 0, res.output
        if fmt == "parquet":
            assert pq.read_table(dest).equals(whole)
            meta = pq.ParquetFile(dest).metadata
            sizes = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
            # written as it streams: two batches of 7 to a row group, the rest in the last
            assert sizes[:-1] == [14] * (len(sizes) - 1) and 0 < sizes[-1] <= 14
        elif fmt == "csv":
            assert dest.read_text() == whole.to_pandas().to_csv(index=False)
        else:
            lines = [json.loads(line) for line in dest.read_text().splitlines()]
            assert lines == json.loads(
                whole.to_pandas().to_json(orient="records", date_format="iso")
            )
    res = runner.invoke(main, ["query", str(root), sql + " LIMIT 0", "--format", "csv"])
    assert res.exit_code == 0 and res.output.splitlines() == [
        "segment_id,start_s,emotion,emotion_probs"
    ]
    narrow = "SELECT segment_id, emotion FROM segments ORDER BY segment_id"
    res = runner.invoke(main, ["query", str(root), narrow, "--limit", "3"])
    shown = [line for line in res.output.splitlines() if line.startswith("│")]
    assert res.exit_code == 0 and len(shown) == 3 and "the first 3 rows" in res.output
    assert (
        pd.Series([line.split("│")[1].strip() for line in shown]).tolist()
        == (whole.column("segment_id").to_pylist()[:3])
    )
