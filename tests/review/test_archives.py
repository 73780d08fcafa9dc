"""Calls delivered in archives go through the review loop like any file: a night's stereo calls
in a tar and a zip (split channels: two speakers per call), annotated; their least confident
segments exported for review with clips equal to the extracted files' (sample for sample), the
tasks and predictions valid for Label Studio's SDK; a simulated review (each clip labelled by
what it holds) imported as a manifest of archive members; the served bundle retrained on it and
the old and the new bundle scored on the held-out calls, read back from the archives.

The served bundle is the small profile's audio classifier (labels from the audio, no vLLM: the
cheapest kind to annotate and retrain). Nothing here is kind-specific: the clips come from
annotator/audio/clips.py for every kind."""

from __future__ import annotations

import json
import tarfile
import wave
import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from annotator.cli import main
from tests.factories import labelstudio_annotation, review_calls, review_retrain_ua
from training.data import read_manifest

ARCHIVES = ("calls-2026-12-07.tar", "calls-2026-12-07.zip")


@pytest.fixture(scope="module")
def night(synth_manifest, small_home, ray_local, tmp_path_factory):
    """The night: 18 stereo calls (two synthetic calls each, one per channel; 144 utterances),
    nine in each archive, annotated with channels split; then every segment exported for
    review."""
    from annotator.audio.decode import decode_source
    from annotator.audio.synth import encode
    from annotator.config import load_config
    from annotator.kinds.audio_classifier.untrained import BUNDLE
    from annotator.pipeline.run import annotate

    work = tmp_path_factory.mktemp("archived-night")
    mono = review_calls(work / "mono", synth_manifest, sentences=6)
    paths = sorted(mono)
    half = len(paths) // 2
    truth: dict[tuple[str, str, int], list[tuple[float, float, str]]] = {}
    extracted: dict[tuple[str, str], Path] = {}
    for k, (left, right) in enumerate(zip(paths[:half], paths[half:], strict=True)):
        a, b = decode_source(left)[0], decode_source(right)[0]
        stereo = np.zeros((2, max(len(a), len(b))), np.float32)
        stereo[0, : len(a)], stereo[1, : len(b)] = a, b
        archive = ARCHIVES[k % 2]
        member = f"2026-12-07/call-{k:02d}.wav"
        extracted[(archive, member)] = encode(stereo, work / "extracted" / archive / member)
        truth[(archive, member, 0)], truth[(archive, member, 1)] = mono[left], mono[right]
    with tarfile.open(work / ARCHIVES[0], "w") as tar:
        for (archive, member), path in extracted.items():
            if archive == ARCHIVES[0]:
                tar.add(path, arcname=member)
    with zipfile.ZipFile(work / ARCHIVES[1], "w", zipfile.ZIP_DEFLATED) as packed:
        for (archive, member), path in extracted.items():
            if archive == ARCHIVES[1]:
                packed.write(path, member)
    settings = {
        "audio": {"channels": "split", "channel_speakers": ["agent", "customer"]},
        "models": {"home": str(small_home), "bundle": f"small:{BUNDLE}"},
        "train": {"storage": str(work / "checkpoints"), "epochs_stage2": 15},
    }
    config_file = work / "annotator.yaml"
    config_file.write_text(yaml.safe_dump(settings))
    out = work / "out"
    config = load_config(config_file, output=str(out))
    summary = annotate(config, [str(work / a) for a in ARCHIVES])
    assert summary.counts.errors == 0
    dest = work / "review"
    run = CliRunner().invoke(
        main,
        [
            "review", "export", str(out), "--to", str(dest), "--budget", "1000",
            "--per-label", "1000", "--config", str(config_file),
        ],
    )  # fmt: skip
    assert run.exit_code == 0, run.output
    tasks = json.loads((dest / "tasks.json").read_text())
    return {
        "work": work,
        "out": out,
        "config": config_file,
        "dest": dest,
        "tasks": tasks,
        "truth": truth,
        "extracted": extracted,
        "bundle": small_home / "small" / BUNDLE,
    }


def _key(data: dict) -> tuple[str, str, int]:
    return Path(data["source_uri"]).name, data["member"], data["channel"]


def _heard(truth, data) -> str:
    """The label of the utterance that overlaps the segment most: what a reviewer hears."""
    spans = truth[_key(data)]
    overlap = [min(end, data["end_s"]) - max(start, data["start_s"]) for start, end, _ in spans]
    return spans[overlap.index(max(overlap))][2]


def test_archived_segments_are_exported_with_the_extracted_files_clips(night):
    """Every segment is exported (budget and quota above the count); both channels of calls in
    both archives; each clip is the extracted file's channel at the segment's span, the same
    16-bit samples."""
    from annotator.audio.decode import decode_source
    from annotator.query import Annotations

    tasks = night["tasks"]
    ann = Annotations(str(night["out"]))
    ((segments,),) = ann.sql("SELECT count(*) FROM segments").fetchall()
    ann.close()
    assert len(tasks) == segments >= 0.9 * sum(len(s) for s in night["truth"].values())
    keys = {_key(t["data"]) for t in tasks}
    for archive in ARCHIVES:
        assert {ch for a, _, ch in keys if a == archive} == {0, 1}
    decoded = {}
    for t in tasks:
        data = t["data"]
        archive, member, channel = _key(data)
        if (archive, member) not in decoded:
            decoded[(archive, member)] = decode_source(str(night["extracted"][(archive, member)]))
        expected = decoded[(archive, member)][channel][
            round(data["start_s"] * 16_000) : round(data["end_s"] * 16_000)
        ]
        with wave.open(str(night["dest"] / data["audio"]), "rb") as handle:
            assert handle.getnchannels() == 1 and handle.getframerate() == 16_000
            clip = np.frombuffer(handle.readframes(handle.getnframes()), "<i2")
        np.testing.assert_array_equal(clip, (np.clip(expected, -1, 1) * 32767).astype("<i2"))


def test_the_tasks_and_predictions_are_valid_for_label_studio(night):
    from label_studio_sdk.label_interface import LabelInterface

    interface = LabelInterface((night["dest"] / "label_config.xml").read_text())
    interface.validate()
    for t in night["tasks"]:
        assert all(t["data"].get(o.value_name) for o in interface.objects if o.value_is_variable)
        (prediction,) = t["predictions"]
        assert interface.validate_prediction(prediction, return_errors=True) == []
    # The SDK does reject what the project would: a label the config does not offer.
    wrong = json.loads(json.dumps(night["tasks"][0]["predictions"][0]))
    wrong["result"][0]["value"]["choices"] = ["furious"]
    assert interface.validate_prediction(wrong, return_errors=True)


@pytest.fixture(scope="module")
def reviewed(night):
    """A reviewer labels every clip with what it holds; the review comes back as a manifest."""
    reviewed = [
        {**t, "id": k + 1, "annotations": [
            labelstudio_annotation(k + 1, _heard(night["truth"], t["data"]), "2026-12-07T09:00:00Z")
        ]}
        for k, t in enumerate(night["tasks"])
    ]  # fmt: skip
    export = night["work"] / "project-1-at-2026-12-07.json"
    export.write_text(json.dumps(reviewed))
    manifest = night["work"] / "reviewed.jsonl"
    run = CliRunner().invoke(
        main,
        [
            "review", "import", str(export), "--output", str(night["out"]), "--manifest",
            str(manifest), "--test-share", "0.3", "--config", str(night["config"]),
        ],
    )  # fmt: skip
    assert run.exit_code == 0, run.output
    return manifest


def test_the_review_comes_back_as_examples_of_archive_members(night, reviewed):
    examples = read_manifest(reviewed)
    by_place = {(_key(t["data"]), t["data"]["start_s"]): t for t in night["tasks"]}
    assert len(examples) == len(night["tasks"])
    for ex in examples:
        key = (Path(ex.audio_uri).name, ex.member, ex.channel)
        t = by_place[(key, ex.start_s)]
        assert ex.label == _heard(night["truth"], t["data"])
        assert ex.speaker == ("agent", "customer")[ex.channel]
        assert ex.recording == f"{ex.audio_uri}!{ex.member}"
    sides: dict[str, set[str]] = {}
    for ex in examples:  # both channels of a call on one side
        sides.setdefault(ex.recording, set()).add(ex.split)
    assert all(len(s) == 1 for s in sides.values())
    assert {"train", "test"} == set().union(*sides.values())


def test_review_retrain_learns_from_the_archived_calls(night, reviewed, tmp_path):
    """The served bundle fine-tuned on the reviewed train calls (6 epochs of its head on Ray
    Train, clips read from the archives); both bundles scored on the held-out calls as served."""
    run = CliRunner().invoke(
        main,
        [
            "review", "retrain", str(reviewed), "--bundle", str(night["bundle"]), "--out",
            str(tmp_path / "new"), "--config", str(night["config"]),
        ],
    )  # fmt: skip
    assert run.exit_code == 0, run.output
    print(run.output)
    ua = review_retrain_ua(run.output)
    assert set(ua) == {"old", "new"}
    # The served classifier is random: chance (0.250). The retrained one learns from the archived
    # clips, but little and by split (held-out calls hash their temporary paths): 0.271-0.450
    # over five splits, so the test holds it above chance only.
    assert ua["old"] <= 0.3 and ua["new"] > ua["old"]
