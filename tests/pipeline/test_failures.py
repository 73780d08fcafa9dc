"""A night that never stops for one file (annotator/pipeline/failures.py): whatever a file raises
in any stage quarantines that file and nothing else; a transient failure is retried in the run
and then left for the next one; what cannot work fails before any work, in one line."""

from __future__ import annotations

import os
import subprocess
import sys

import pyarrow as pa
import pytest

from annotator.config import load_config
from annotator.output.failpoints import RAISE_ENV
from annotator.output.tables import OutputTables
from annotator.pipeline.run import annotate
from tests.factories import assert_same_rows, rows_of, table_of, upload_dir


def _cli(args, small_home, env=None, timeout=600):
    env = env or {}
    full = {**os.environ, "ANNOTATOR_MODELS__HOME": str(small_home), **env}
    if RAISE_ENV not in env:
        full.pop(RAISE_ENV, None)
    return subprocess.run(
        [sys.executable, "-m", "annotator.cli", *args],
        env=full,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _s3_env(s3):
    return {
        "ANNOTATOR_S3__ENDPOINT_URL": s3.endpoint_url,
        "ANNOTATOR_S3__KEY": s3.key,
        "ANNOTATOR_S3__SECRET": s3.secret,
        "ANNOTATOR_S3__REGION": s3.region,
    }


def _windows(corpus_root, names, config):
    """The decode rows (windows, file_done) of loose files of the corpus, as one batch."""
    from annotator.pipeline.rows import ROW
    from annotator.pipeline.windows import ingest_rows

    rows = []
    for name in names:
        rows += list(ingest_rows(str(corpus_root / "loose" / name), config, probing=False))
    return pa.Table.from_pylist(rows, schema=ROW)


def test_a_file_that_raises_in_asr_is_quarantined_and_its_batch_mates_are_untouched(
    corpus, small_home, monkeypatch
):
    """One batch holding two files' windows; the stage raises (an exception of a type it does
    not know) for one: the other's segments are those of an undisturbed call, the poisoned
    file's work becomes one error row standing for its segments, its file_done goes on."""
    from annotator.pipeline.failures import StageBroken
    from annotator.pipeline.stages import ASRStage

    root, _ = corpus
    config = load_config(None, models={"home": str(small_home)})
    stage = ASRStage(config)
    batch = _windows(root, ["ep1.wav", "ep2.mp3"], config)
    alone = stage(_windows(root, ["ep1.wav"], config)).to_pylist()

    monkeypatch.setenv(RAISE_ENV, "asr:ep2.mp3")
    out = stage(batch).to_pylist()
    ep1 = [r for r in out if r["source_uri"].endswith("ep1.wav")]
    ep2 = [r for r in out if r["source_uri"].endswith("ep2.mp3")]
    assert [(r["kind"], r["text"], r["start_s"]) for r in ep1] == [
        (r["kind"], r["text"], r["start_s"]) for r in alone
    ]
    assert any(r["kind"] == "segment" and r["text"] for r in ep1)
    spans = sum(len(r["spans"]) for r in batch.to_pylist() if "ep2" in r["source_uri"])
    (error,) = [r for r in ep2 if r["kind"] == "error"]
    assert (error["stage"], error["error_type"], error["error_class"]) == (
        "asr",
        "InjectedFailure",
        "permanent",
    )
    assert error["replaces"] == spans > 0
    assert [r["kind"] for r in ep2 if r["kind"] != "error"] == ["file_done"]

    # Files failing one after another with no success between: the stage's fault, not theirs.
    monkeypatch.setenv(RAISE_ENV, "asr:ep")
    stage.streak.limit = 2
    with pytest.raises(StageBroken, match="stage asr failed on 2 files in a row"):
        stage(batch)


def test_decode_ends_a_file_that_raises_with_its_error_and_goes_on(corpus, small_home, monkeypatch):
    """Unexpected exceptions in decoding: one inside a file (ingest turns it into that file's
    error row), and one escaping the row stream itself (decode closes the files it had started
    and takes the next input)."""
    import annotator.pipeline.decode as decode_module
    from annotator.pipeline.decode import decode

    root, _ = corpus
    config = load_config(None, models={"home": str(small_home)})
    inputs = pa.table(
        {
            "uri": [str(root / "loose" / "ep1.wav"), str(root / "loose" / "ep3.flac")],
            "skipped": [0, 0],
        }
    )
    monkeypatch.setenv(RAISE_ENV, "decode:ep1.wav")
    rows = pa.concat_tables(decode(inputs, config, probing=False)).to_pylist()
    errors = [r for r in rows if r["kind"] == "error"]
    assert [(r["stage"], r["error_type"], r["source_uri"][-7:]) for r in errors] == [
        ("decode", "InjectedFailure", "ep1.wav")
    ]
    done = {r["source_uri"][-8:]: r for r in rows if r["kind"] == "file_done"}
    assert done["/ep1.wav"]["n_errors"] == 1
    assert done["ep3.flac"]["n_errors"] == 0 and done["ep3.flac"]["n_segments"] > 0

    monkeypatch.delenv(RAISE_ENV)
    real = decode_module.ingest_rows

    def breaks_after_the_first_window(uri, *args, **kwargs):
        for row in real(uri, *args, **kwargs):
            yield row
            if row["kind"] == "window" and uri.endswith("ep1.wav"):
                raise ValueError("layout changed mid-file")

    monkeypatch.setattr(decode_module, "ingest_rows", breaks_after_the_first_window)
    rows = pa.concat_tables(decode(inputs, config, probing=False)).to_pylist()
    ep1 = [r for r in rows if r["source_uri"].endswith("ep1.wav")]
    windows = [r for r in ep1 if r["kind"] == "window"]
    (error,) = [r for r in ep1 if r["kind"] == "error"]
    (end,) = [r for r in ep1 if r["kind"] == "file_done"]
    assert (error["stage"], error["error_type"]) == ("decode", "ValueError")
    assert end["n_segments"] == sum(len(w["spans"]) for w in windows) > 0
    assert end["n_errors"] == 1
    assert any(r["kind"] == "file_done" and r["source_uri"].endswith("ep3.flac") for r in rows)


@pytest.fixture(scope="module")
def s3_corpus(corpus, s3_server):
    root, _ = corpus
    upload_dir(s3_server, root, "failures/corpus")
    return "s3://failures/corpus", root


def test_one_file_per_stage_fails_the_night_goes_on_and_later_runs_finish_it(
    s3_corpus, baseline, small_home, s3_server, ray_local, tmp_path
):
    """Over S3, one run (the CLI, as cron runs it) where opening one object fails every time
    (a transient error: retried, then left for the next run) and each model stage raises for
    another file: it exits 0; each poisoned file is quarantined with its stage and type; the
    undisturbed file's rows are the baseline's. The next run does the transient file and leaves
    the quarantined ones; --retry-errors does them: then every row equals the baseline."""
    source, local_root = s3_corpus
    out = tmp_path / "out"
    poison = "source:ep3.flac,asr:ep2.mp3,features:calls/c1.wav,label:calls/c2.ogg"
    env = {**_s3_env(s3_server), RAISE_ENV: poison, "ANNOTATOR_RUN__RETRY_BACKOFF_S": "0.1"}
    night = _cli(["annotate", source, "--out", str(out)], small_home, env)
    assert night.returncode == 0, night.stderr[-3000:]

    errors = {
        (r["source_uri"].rsplit("/", 1)[-1], r["member"]): r
        for r in table_of(out, "errors")[1].to_pylist()
    }
    expected = {
        ("ep3.flac", ""): ("source", "unreadable", "transient"),
        ("ep2.mp3", ""): ("asr", "InjectedFailure", "permanent"),
        ("calls.tar", "calls/c1.wav"): ("features", "InjectedFailure", "permanent"),
        ("calls.tar", "calls/c2.ogg"): ("label", "InjectedFailure", "permanent"),
    }
    for key, (stage, kind, klass) in expected.items():
        assert (errors[key]["stage"], errors[key]["error_type"], errors[key]["error_class"]) == (
            stage,
            kind,
            klass,
        ), errors[key]
    assert "after 3 tries" in errors[("ep3.flac", "")]["message"]
    files = {
        (r["source_uri"].rsplit("/", 1)[-1], r["member"]): r
        for r in table_of(out, "files")[1].to_pylist()
    }
    assert files[("ep3.flac", "")]["status"] == "retry"
    for key in expected:
        assert files[key]["segments"] == 0, key
    baseline_rows = rows_of(table_of(baseline[0], "segments")[1], local_root)
    ep1 = {k: v for k, v in baseline_rows.items() if k.startswith("loose/ep1.wav")}
    assert ep1
    assert_same_rows(rows_of(table_of(out, "segments")[1], source), ep1)

    from annotator.query import Annotations

    ann = Annotations(str(out))
    listed = ann.named("not_done").df().to_dict("records")
    ann.close()
    outcome = {r["input"].removeprefix(source + "/"): r["outcome"] for r in listed}
    assert outcome["loose/ep3.flac"] == "next run"
    assert outcome["calls.tar!calls/c1.wav"] == "quarantined"

    config = load_config(
        None, output=str(out), models={"home": str(small_home)}, s3=s3_server.model_dump()
    )
    second = annotate(config, [source])
    assert second.counts.files == 1 and second.counts.retry == 0  # ep3.flac alone
    ledger = OutputTables(str(out))
    # Six files done; with --retry-errors the three poisoned and broken.wav are not.
    assert len(ledger.committed_ids()) == 6
    assert len(ledger.committed_ids(retry_errors=True)) == 2

    third = annotate(config, [source], retry_errors=True)
    assert third.counts.files == 4
    assert_same_rows(rows_of(table_of(out, "segments")[1], source), baseline_rows)


def test_what_cannot_work_fails_before_any_work_in_one_line(corpus, small_home, tmp_path):
    """A missing source, an output that is a file, a bundle that is not there, a GPU stage on a
    cluster without GPUs: each a one-line error and a non-zero exit, no traceback, no table."""
    root, _ = corpus
    a_file = tmp_path / "not-a-dir"
    a_file.write_text("x")
    good = str(root / "loose" / "ep1.wav")
    out = tmp_path / "out"
    cases = [
        (["annotate", str(root / "clas"), "--out", str(out)], {}, "clas"),
        (["annotate", good, "--out", str(a_file)], {}, "not-a-dir"),
        (
            ["annotate", good, "--out", str(out)],
            {"ANNOTATOR_MODELS__BUNDLE": str(tmp_path / "no-bundle")},
            "no-bundle",
        ),
        (
            ["annotate", good, "--out", str(out)],
            {"ANNOTATOR_STAGES__LABEL__NUM_GPUS": "1"},
            "GPU",
        ),
    ]
    for args, env, named in cases:
        done = _cli(args, small_home, env, timeout=300)
        lines = [line for line in done.stderr.splitlines() if line.startswith("Error:")]
        assert done.returncode != 0, (args, env, done.stderr[-2000:])
        assert "Traceback" not in done.stderr, done.stderr[-3000:]
        assert len(lines) == 1 and named in lines[0], done.stderr[-2000:]
        assert not (out / "files").exists()


def test_a_stage_that_cannot_be_placed_stops_the_run_naming_the_resource(
    corpus, small_home, tmp_path
):
    """The label stage asks for a GPU, and the configuration says an autoscaler may reach one
    (cluster.max_gpus), so the run starts; none comes. The run stops once nothing has reached
    the sink for run.stall_timeout_s, naming the stage and the GPU it waits for, and records
    itself as stopped."""
    root, _ = corpus
    out = tmp_path / "out"
    env = {
        "ANNOTATOR_STAGES__LABEL__NUM_GPUS": "1",
        "ANNOTATOR_CLUSTER__MAX_GPUS": "1",
        "ANNOTATOR_RUN__STALL_TIMEOUT_S": "20",
    }
    done = _cli(["annotate", str(root / "loose" / "ep1.wav"), "--out", str(out)], small_home, env)
    lines = [line for line in done.stderr.splitlines() if line.startswith("Error:")]
    assert done.returncode != 0, done.stderr[-3000:]
    assert len(lines) == 1, done.stderr[-3000:]
    assert "stall_timeout_s 20" in lines[0] and "stage label" in lines[0], lines[0]
    assert "GPU 1" in lines[0], lines[0]
    (run,) = OutputTables(str(out)).read("runs").to_pylist()
    assert run["status"] == "stopped" and "GPU 1" in run["reason"]


def test_overlapping_inputs_are_annotated_once(corpus, small_home, ray_local, tmp_path):
    """A directory, a glob over it and one file in it, named by a path with a `./` in it: each
    file is listed, annotated and committed once."""
    root, _ = corpus
    out = tmp_path / "out"
    config = load_config(None, output=str(out), models={"home": str(small_home)})
    inputs = [str(root / "loose"), str(root / "loose" / "*.wav"), f"{root}/./loose/ep2.mp3"]
    summary = annotate(config, inputs)
    files = OutputTables(str(out)).read("files", ["call_id", "source_uri"]).to_pylist()
    names = sorted(f["source_uri"].rsplit("/", 1)[-1] for f in files)
    assert names == ["broken.wav", "ep1.wav", "ep2.mp3", "ep3.flac"]
    assert summary.counts.files == 4
