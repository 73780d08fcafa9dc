"""The annotate job end to end on a real Ray local cluster, Whisper tiny.en and vLLM on the CPU."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from annotator.config import load_config
from annotator.output.tables import OutputTables
from annotator.pipeline.run import annotate
from annotator.schema import ERRORS, RUNS, SEGMENTS
from tests.factories import assert_same_rows, raw_rows, rows_of, table_of

pytestmark = pytest.mark.vllm


def _config(out, small_home, **extra):
    return load_config(None, output=str(out), models={"home": str(small_home)}, **extra)


def test_end_to_end_output(corpus, baseline):
    from annotator.models.asr import word_error_rate

    _, spoken = corpus
    out, summary = baseline
    _files, segments = table_of(out, "segments")
    # The Delta table carries exactly the documented schema; an uninterrupted run leaves no row
    # the views hide, and its files came in one commit (commit.every_s 30 s > this run).
    raw = raw_rows(out, "segments")
    assert raw.schema.remove_metadata() == SEGMENTS and raw.num_rows == segments.num_rows
    assert len(set(segments["commit_id"].to_pylist())) == summary.counts.commits == 1
    assert set(segments["segment_id"].to_pylist()) == {
        f"{r}-{i:06d}"
        for r, i in zip(
            segments["recording_id"].to_pylist(), segments["segment_index"].to_pylist(), strict=True
        )
    }
    assert len(set(segments["segment_id"].to_pylist())) == segments.num_rows
    rows = segments.to_pylist()
    labels = ["neutral", "angry", "sad", "happy"]
    for row in rows:
        probs = {p["label"]: p["prob"] for p in row["emotion_probs"]}
        assert list(probs) == labels
        assert abs(sum(probs.values()) - 1) < 1e-4
        assert row["emotion"] == max(probs, key=probs.get)
        assert row["emotion_confidence"] == pytest.approx(probs[row["emotion"]])
        assert row["bundle_version"] == segments["bundle_version"][0].as_py() != ""
        assert row["bundle_kind"] == "emoq"  # the small profile's bundle
        assert row["words"] and row["start_s"] <= row["words"][0]["start"] + 0.5
        assert row["end_s"] > row["start_s"]
        assert row["language"] == "en" and row["run_id"] == summary.run_id
    # Transcripts: WER over the corpus (the figure quoted in the closing note is printed here).
    refs, hyps = [], []
    for (uri, member), text in sorted(spoken.items()):
        mine = sorted(
            (r for r in rows if r["source_uri"] == uri and r["member"] == member),
            key=lambda r: r["start_s"],
        )
        assert mine, (uri, member)
        refs.append(text)
        hyps.append(" ".join(r["text"] for r in mine))
    wer = word_error_rate(refs, hyps)
    print(f"corpus WER {wer:.3f} over {len(refs)} recordings")
    assert wer < 0.2, list(zip(refs, hyps, strict=True))
    # The bad file is one error row, nothing else failed.
    _, errors = table_of(out, "errors")
    assert raw_rows(out, "errors").schema.remove_metadata() == ERRORS
    (error,) = errors.to_pylist()
    assert error["source_uri"].endswith("broken.wav") and error["stage"] == "decode"
    assert summary.counts.errors == 1 and summary.counts.segments == segments.num_rows
    assert summary.counts.files == len(spoken) + 1
    # The run row, and the files table (the ledger) holds one row per committed file.
    _, runs = table_of(out, "runs")
    assert raw_rows(out, "runs").schema.remove_metadata() == RUNS
    (run,) = runs.to_pylist()
    assert run["segments"] == segments.num_rows and run["errors"] == 1
    assert run["audio_hours"] == pytest.approx(summary.audio_hours) and run["audio_hours"] > 0
    assert len(OutputTables(str(out)).committed_ids()) == len(spoken) + 1


def test_rerun_skips_committed_files_and_force_redoes_them(
    corpus, baseline, small_home, lora_bundle, tmp_path
):
    import shutil

    root, spoken = corpus
    out, first = baseline
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    before = rows_of(table_of(copy, "segments")[1])
    again = annotate(_config(copy, small_home), [str(root)])
    assert again.counts.files == 0 and again.counts.skipped == len(spoken) + 1
    assert rows_of(table_of(copy, "segments")[1]) == before
    assert again.earlier_bundles == ()  # same bundle: nothing to say
    # A retrained bundle on the same output: the skipped files keep the old labels, and the
    # summary says so and how to relabel.
    other = annotate(
        load_config(
            None, output=str(copy), models={"home": str(small_home), "bundle": str(lora_bundle)}
        ),
        [str(root)],
    )
    assert other.counts.skipped == len(spoken) + 1 and other.bundle_version != first.bundle_version
    assert other.earlier_bundles == (first.bundle_version,)
    assert any("--force relabels" in line for line in other.lines())
    from datetime import UTC, datetime

    from annotator.query import Annotations

    before_force = datetime.now(UTC)
    forced = annotate(_config(copy, small_home), [str(root)], force=True)
    assert forced.counts.files == len(spoken) + 1
    _, table = table_of(copy, "segments")
    assert_same_rows(rows_of(table), before)  # the new commit supersedes the old: no duplicates
    assert len(table) == len(set(table["segment_id"].to_pylist()))
    assert set(table["run_id"].to_pylist()) == {forced.run_id}
    # The superseded rows are still in the table; time travel shows the output as it was.
    assert raw_rows(copy, "segments").num_rows == 2 * table.num_rows
    earlier = Annotations(copy, as_of=before_force).arrow("SELECT run_id FROM segments")
    assert set(earlier["run_id"].to_pylist()) == {first.run_id}


def test_sigkill_mid_run_then_resume_gives_the_uninterrupted_rows(
    corpus, baseline, small_home, tmp_path
):
    root, _ = corpus
    out = tmp_path / "out"
    # Batches of one row, so files finish one after another and the kill lands mid-run; each file
    # committed as soon as it is finished.
    env = dict(
        os.environ,
        ANNOTATOR_MODELS__HOME=str(small_home),
        ANNOTATOR_STAGES__ASR__BATCH_SIZE="1",
        ANNOTATOR_STAGES__FEATURES__BATCH_SIZE="1",
        ANNOTATOR_STAGES__LABEL__BATCH_SIZE="1",
        ANNOTATOR_COMMIT__EVERY_S="0",
    )
    # Its own local Ray cluster, as on a laptop: killing the process group kills all of it.
    cmd = [sys.executable, "-m", "annotator.cli", "annotate", str(root), "--out", str(out)]
    proc = subprocess.Popen(
        cmd,
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 300

    def with_segments() -> int:  # committed files that hold segments, not only errors
        files = OutputTables(str(out)).read("files", ["segments"])
        return sum(1 for n in files["segments"].to_pylist() if n > 0)

    # Kill as soon as a file with segments is committed: the others are in flight in the stages.
    # (Which file commits first is up to the scheduler; the broken file commits errors only.)
    while not with_segments() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    committed = OutputTables(str(out)).committed_ids()
    baseline_rows = rows_of(table_of(baseline[0], "segments")[1])
    assert len(committed) > 0 and len(rows_of(table_of(out, "segments")[1])) < len(baseline_rows)

    summary = annotate(_config(out, small_home), [str(root)])
    assert summary.counts.skipped == len(committed)
    _, rows = table_of(out, "segments")
    assert_same_rows(rows_of(rows), baseline_rows)
    assert rows.num_rows == len(baseline_rows)  # no duplicates
    _, errors = table_of(out, "errors")
    assert errors.num_rows == 1


def test_s3_output_equals_local_output(corpus, baseline, small_home, s3_server):
    from annotator.query import Annotations
    from tests.factories import make_bucket

    root, _ = corpus
    make_bucket(s3_server, "annotate-out")
    config = _config(
        "s3://annotate-out/nightly", small_home, s3=s3_server.model_dump(exclude_none=True)
    )
    summary = annotate(config, [str(root)])
    ann = Annotations("s3://annotate-out/nightly", s3_server)
    s3_rows = rows_of(ann.arrow("SELECT * FROM segments"))
    assert_same_rows(s3_rows, rows_of(table_of(baseline[0], "segments")[1]))
    assert ann.sql("SELECT count(*) FROM errors").fetchall()[0][0] == 1
    assert ann.sql("SELECT run_id FROM runs").fetchall() == [(summary.run_id,)]
    tables = OutputTables("s3://annotate-out/nightly", s3_server)
    assert len(tables.committed_ids()) == summary.counts.files


def test_a_qieemo_bundle_relabels_a_file_of_an_emoq_output(corpus, baseline, small_home, tmp_path):
    """The graph follows the served bundle's kind: a Qieemo bundle runs ASR then its own stage
    (no features, no vLLM). One file of the baseline's EmoQ output relabelled with --force: the
    output holds rows of two kinds, queryable side by side, and the report says which kind
    labelled what."""
    import shutil

    from annotator.models.bundle import Bundle
    from annotator.query import Annotations
    from annotator.report.html import build_report

    root, spoken = corpus
    out, _ = baseline
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    episode = root / "loose" / "ep2.mp3"
    config = load_config(
        None, output=str(copy), models={"home": str(small_home), "bundle": "small:qieemo-bundle"}
    )
    summary = annotate(config, [str(episode)], force=True)
    assert summary.counts.files == 1
    placed = summary.counts.placement
    assert set(placed) == {"asr", "qieemo"}  # the kind's stages, and only those
    ann = Annotations(str(copy))
    kinds = dict(
        ann.sql(
            "SELECT bundle_kind, list(DISTINCT source_uri) FROM segments GROUP BY ALL"
        ).fetchall()
    )
    assert kinds["qieemo"] == [str(episode)]
    assert set(kinds["emoq"]) == {uri for uri, _ in spoken} - {str(episode)}
    bundle = Bundle.load(small_home / "small" / "qieemo-bundle")
    rows = ann.sql(
        "SELECT bundle_version, audio_only, emotion, emotion_probs, text, llm_model FROM segments "
        "WHERE bundle_kind = 'qieemo'"
    ).fetchall()
    assert rows
    for version, audio_only, emotion, probs, text, llm in rows:
        assert version == bundle.version and audio_only and text  # transcribed, labelled by audio
        assert llm == ""  # no LLM served it
        assert [p["label"] for p in probs] == bundle.labels
        assert abs(sum(p["prob"] for p in probs) - 1) < 1e-4
        assert emotion == max(probs, key=lambda p: p["prob"])["label"]
    runs = ann.sql("SELECT DISTINCT bundle_kind FROM runs ORDER BY 1").fetchall()
    assert runs == [("emoq",), ("qieemo",)]
    ann.close()
    assert "qieemo" in build_report(str(copy))


def test_an_emosllm_bundle_relabels_a_file_through_its_own_features_and_vllm(
    corpus, baseline, small_home, tmp_path
):
    """An EmoSLLM bundle runs ASR, its encoder + mapper stage (several soft tokens per segment)
    and the vLLM label stage with its own adapter; rows say which kind and version labelled
    them, and which transcript they read."""
    import shutil

    from annotator.models.bundle import Bundle
    from annotator.query import Annotations

    root, _ = corpus
    out, _ = baseline
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    episode = root / "loose" / "ep1.wav"
    config = load_config(
        None, output=str(copy), models={"home": str(small_home), "bundle": "small:emosllm-bundle"}
    )
    summary = annotate(config, [str(episode)], force=True)
    assert summary.counts.files == 1
    assert set(summary.counts.placement) == {"asr", "emosllm", "label"}
    bundle = Bundle.load(small_home / "small" / "emosllm-bundle")
    ann = Annotations(str(copy))
    rows = ann.sql(
        "SELECT bundle_version, audio_only, emotion, emotion_probs, text, llm_model FROM segments "
        "WHERE bundle_kind = 'emosllm'"
    ).fetchall()
    assert rows and all(version == bundle.version for version, *_ in rows)
    for _, audio_only, emotion, probs, text, llm in rows:
        assert audio_only == (not text.strip()) and llm == "small:llm"
        assert [p["label"] for p in probs] == bundle.labels
        assert abs(sum(p["prob"] for p in probs) - 1) < 1e-4
        assert emotion == max(probs, key=lambda p: p["prob"])["label"]
    assert len(rows) == 2  # both of ep1's segments (that audio reaches the posterior:
    # tests/models/test_emosllm.py and test_labelers.py)
    ann.close()
