"""The whole review loop through the CLI, as a user walks it: calls labelled by the served bundle
(the small profile's untrained one, which knows nothing of these calls), every segment exported to
Label Studio, a reviewer who labels what they hear (simulated by editing the export JSON), the
labels imported as a manifest split by call, and ``review retrain``: the bundle fine-tuned on the
reviewed train calls must beat the served one on the reviewed held-out calls.

The calls are the wording-only synthetic corpus' utterances (emotion in the words, flat prosody),
four to a call, so what the new bundle learns reaches it through the transcript the pipeline
recognised."""

from __future__ import annotations

import json
import re
import time

import pytest
import yaml
from click.testing import CliRunner

from annotator.cli import main
from tests.factories import labelstudio_annotation, review_calls
from training.data import read_manifest

pytestmark = pytest.mark.vllm


def _heard(truth, task) -> str:
    """The label of the utterance that overlaps the segment most."""
    data = task["data"]
    spans = truth[data["source_uri"]]
    overlap = [min(end, data["end_s"]) - max(start, data["start_s"]) for start, end, _ in spans]
    return spans[overlap.index(max(overlap))][2]


@pytest.fixture(scope="module")
def loop(wording_manifest, small_home, ray_local, tmp_path_factory):
    work = tmp_path_factory.mktemp("review-loop")
    truth = review_calls(work / "calls", wording_manifest)
    out = work / "out"
    config = work / "annotator.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "output": str(out),
                "models": {"home": str(small_home)},
                "train": {"storage": str(work / "checkpoints"), "epochs_stage2": 10},
            }
        )
    )
    runner = CliRunner()

    def cli(*args):
        t0 = time.perf_counter()
        run = runner.invoke(main, [*map(str, args), "--config", str(config)])
        assert run.exit_code == 0, run.output
        print(f"{args[0]} {args[1]}: {time.perf_counter() - t0:.0f} s")
        return run.output

    cli("annotate", work / "calls")
    cli("review", "export", out, "--to", work / "batch", "--budget", 1000, "--per-label", 1000)
    tasks = json.loads((work / "batch" / "tasks.json").read_text())
    reviewed = [
        {
            **t,
            "id": k + 1,
            "annotations": [labelstudio_annotation(k + 1, _heard(truth, t), "2026-11-23T09:00Z")],
        }
        for k, t in enumerate(tasks)
    ]
    export = work / "project-7-at-2026-11-23.json"
    export.write_text(json.dumps(reviewed))
    manifest = work / "reviewed.jsonl"
    cli("review", "import", export, "--output", out, "--manifest", manifest, "--test-share", 0.5)
    served = small_home / "small" / "bundle"
    compared = cli("review", "retrain", manifest, "--bundle", served, "--out", work / "new")
    return truth, tasks, read_manifest(manifest), compared


def test_every_segment_went_out_and_came_back_labelled_as_heard(loop):
    truth, tasks, examples, _ = loop
    utterances = sum(len(spans) for spans in truth.values())
    assert len(tasks) == len(examples) >= 0.9 * utterances
    heard = {(t["data"]["source_uri"], t["data"]["start_s"]): _heard(truth, t) for t in tasks}
    assert all(heard[(e.audio_uri, e.start_s)] == e.label for e in examples)
    sides = {}
    for e in examples:
        sides.setdefault(e.audio_uri, set()).add(e.split)
    assert all(len(s) == 1 for s in sides.values())  # a call is on one side only
    assert {"train", "test"} <= set().union(*sides.values())


def test_retrained_bundle_beats_the_served_one_on_the_reviewed_held_out_calls(loop):
    _, _, examples, compared = loop
    print(compared)
    held_out = sum(e.split == "test" for e in examples)
    assert f"on {held_out} held-out reviewed segments" in compared
    ua = {
        which: float(value)
        for which, value in re.findall(
            r"^\s+(old|new) \S+: WA [\d.]+ · UA ([\d.]+)", compared, re.M
        )
    }
    assert set(ua) == {"old", "new"}
    assert ua["old"] <= 0.5  # the served bundle never heard these words
    assert ua["new"] >= ua["old"] + 0.3
