"""The review loop's files, in Label Studio's formats: the least confident segments of a real
pipeline output exported as tasks with their audio, a review simulated by editing the JSON the way
Label Studio's export writes it, and the labels read back as a manifest split by call."""

from __future__ import annotations

import io
import json
import tarfile
import wave
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from click.testing import CliRunner

from annotator.cli import main
from annotator.query import Annotations
from tests.factories import labelstudio_annotation
from training.data import held_out_call, read_manifest

pytestmark = pytest.mark.vllm


@pytest.fixture(scope="module")
def exported(baseline, tmp_path_factory):
    out, _ = baseline
    dest = tmp_path_factory.mktemp("review") / "batch1"
    run = CliRunner().invoke(
        main, ["review", "export", str(out), "--to", str(dest), "--budget", "5", "--per-label", "2"]
    )
    assert run.exit_code == 0, run.output
    return out, dest, json.loads((dest / "tasks.json").read_text()), run.output


def test_export_takes_the_least_confident_within_quota_and_budget(exported):
    out, _, tasks, output = exported
    ann = Annotations(str(out))
    df = ann.sql(
        "SELECT segment_id, member, emotion_confidence AS c, emotion_probs FROM segments"
    ).df()
    df["predicted"] = [max(p, key=lambda x: x["prob"])["label"] for p in df.emotion_probs]
    ranked = df.sort_values(["c", "segment_id"])  # files and archive members alike
    ranked = ranked[ranked.groupby("predicted").cumcount() < 2]  # the quota of each label
    expected = list(ranked.segment_id[:5])
    assert [t["data"]["segment_id"] for t in tasks] == expected
    scores = [t["predictions"][0]["score"] for t in tasks]
    assert scores == sorted(scores)
    for t in tasks:
        (prediction,) = t["predictions"]
        (result,) = prediction["result"]
        assert result["from_name"] == "emotion" and result["to_name"] == "audio"
        assert result["type"] == "choices"
        row = df.set_index("segment_id").loc[t["data"]["segment_id"]]
        assert result["value"]["choices"] == [row.predicted]
    assert f"{len(tasks)} tasks" in output


def _decoded(data: dict) -> np.ndarray:
    """The task's whole source decoded, its archive member extracted with tarfile first."""
    from annotator.audio.decode import decode_source, iter_decoded

    if not data["member"]:
        return decode_source(data["source_uri"])
    with tarfile.open(data["source_uri"]) as tar:
        blob = tar.extractfile(data["member"]).read()
    return np.concatenate(list(iter_decoded(io.BytesIO(blob))), axis=1)


def test_exported_clips_are_the_segments_audio(exported, baseline):
    out, dest, tasks, _ = exported
    ann = Annotations(str(out))
    members = ann.sql("SELECT DISTINCT member FROM segments WHERE member <> ''").fetchall()
    ann.close()
    assert members  # the corpus holds a tar: its members' segments are exported like files
    for t in tasks:
        data = t["data"]
        with wave.open(str(dest / data["audio"]), "rb") as handle:
            assert handle.getframerate() == 16000 and handle.getnchannels() == 1
            clip = np.frombuffer(handle.readframes(handle.getnframes()), "<i2") / 32767
        source = _decoded(data)
        audio = source.mean(axis=0) if data["channel"] is None else source[data["channel"]]
        expected = audio[round(data["start_s"] * 16000) : round(data["end_s"] * 16000)]
        assert len(clip) == len(expected)
        np.testing.assert_allclose(clip, np.clip(expected, -1, 1), atol=2 / 32767)


def test_label_config_offers_the_bundles_labels(exported):
    out, dest, _, _ = exported
    root = ET.fromstring((dest / "label_config.xml").read_text())
    choices = root.find("Choices")
    assert choices.get("name") == "emotion" and choices.get("toName") == "audio"
    offered = [c.get("value") for c in choices.findall("Choice")]
    probs = Annotations(str(out)).sql("SELECT emotion_probs FROM segments LIMIT 1").fetchall()[0][0]
    assert offered == [p["label"] for p in probs]
    assert root.find("Audio").get("value") == "$audio"


def test_reviewed_labels_come_back_as_a_manifest_split_by_call(exported, tmp_path):
    out, _, tasks, _ = exported
    labels = ["neutral", "angry", "sad", "happy"]
    reviewed = []
    for k, t in enumerate(tasks):
        item = {**t, "id": k + 1, "annotations": []}
        if k == 0:  # opened and skipped: no label
            item["annotations"] = [{"id": 10, "result": [], "was_cancelled": True}]
        else:
            first = labels[k % 4]
            item["annotations"].append(
                labelstudio_annotation(20 + k, first, "2026-11-20T10:00:00Z")
            )
            if k == 1:  # relabelled later by a second reviewer: the latest wins
                item["annotations"].append(
                    labelstudio_annotation(40, "sad", "2026-11-21T09:00:00Z")
                )
        reviewed.append(item)
    export = tmp_path / "project-1-at-2026-11-22.json"
    export.write_text(json.dumps(reviewed))
    manifest = tmp_path / "reviewed.jsonl"
    run = CliRunner().invoke(
        main,
        ["review", "import", str(export), "--output", str(out), "--manifest", str(manifest)],
    )
    assert run.exit_code == 0, run.output
    assert "1 tasks not labelled yet" in run.output
    examples = read_manifest(manifest)
    assert len(examples) == len(tasks) - 1
    by_place = {(t["data"]["source_uri"], t["data"]["start_s"]): t for t in tasks}
    for ex in examples:
        t = by_place[(ex.audio_uri, ex.start_s)]
        k = tasks.index(t)
        assert ex.label == ("sad" if k == 1 else labels[k % 4])
        assert ex.transcript == t["data"]["text"] and ex.channel == t["data"]["channel"]
        expected = "test" if held_out_call(t["data"]["call_id"], 0.2) else "train"
        assert ex.split == expected
    # A call is on one side only.
    sides = {}
    for ex in examples:
        sides.setdefault(ex.audio_uri, set()).add(ex.split)
    assert all(len(s) == 1 for s in sides.values())
    # Labels outside the label set are refused, naming them.
    reviewed[1]["annotations"].append(labelstudio_annotation(50, "furious", "2026-11-22T09:00:00Z"))
    export.write_text(json.dumps(reviewed))
    run = CliRunner().invoke(
        main,
        ["review", "import", str(export), "--output", str(out), "--manifest", str(manifest)],
    )
    assert run.exit_code != 0 and "furious" in run.output


def test_calls_areheld_out_call_by_a_stable_hash():
    ids = [f"call-{i}" for i in range(4000)]
    share = np.mean([held_out_call(i, 0.25) for i in ids])
    assert share == pytest.approx(0.25, abs=0.03)
    assert [held_out_call(i, 0.25) for i in ids[:50]] == [held_out_call(i, 0.25) for i in ids[:50]]
    assert not any(held_out_call(i, 0.0) for i in ids)
