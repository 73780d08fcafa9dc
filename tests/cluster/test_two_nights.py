"""Two nights on a cluster whose nodes share no disk (tests/blind.py), every step a ``ray job
submit`` to the blind head as cluster/README.md walks it, object storage (moto) the only thing
the nodes and this test (the user's laptop) share:

night 1: the small profile's untrained bundle pushed and promoted as ``current``; calls
annotated from ``s3://`` with ``models.bundle: registry:current``; the night compacted; the
least confident segments exported for review to ``s3://``; a reviewer labels what each clip holds
(simulated: Label Studio's export JSON, written back to S3); the review imported as a manifest
on S3; retrained in two stages on Ray Train (checkpoints and the stage-1 weights on S3),
evaluated, pushed and promoted;

night 2: the next night's files annotated with the same configuration: their rows carry the
new bundle's version.

Then, with this test process as the driver of the same blind cluster, ``review retrain`` (stage
2 from the served bundle, both bundles scored by an evaluation actor on a blind node) must beat
the served bundle on the reviewed held-out calls.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
import tempfile
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from annotator.cli import main
from annotator.models.registry import Registry
from annotator.query import Annotations
from tests.factories import (
    labelstudio_annotation,
    make_bucket,
    review_calls,
    review_retrain_ua,
    s3_filesystem,
    upload_dir,
)
from training.data import read_manifest

pytestmark = pytest.mark.vllm

OUT = "s3://annotations/nightly"
REVIEW = "s3://review/2026-12-01"


def _heard(truth, task) -> str:
    """The label of the utterance that overlaps the segment most."""
    data = task["data"]
    spans = truth[data["source_uri"]]
    overlap = [min(end, data["end_s"]) - max(start, data["start_s"]) for start, end, _ in spans]
    return spans[overlap.index(max(overlap))][2]


@pytest.fixture(scope="module")
def configmap(s3_server, s3_models):
    """The configuration every pod mounts (a ConfigMap on KubeRay): a directory outside what the
    blind nodes hide, as /etc/annotator is on the pods."""
    folder = Path(tempfile.mkdtemp(prefix="annotator-configmap-"))
    config = {
        "s3": s3_server.model_dump(),
        "audio": {"channels": "mix"},
        # One vLLM engine for the cluster: each engine's start costs ~20 CPU-s of this 2-core
        # machine, and spreading the label stage is test_blind_annotate.py's concern.
        "stages": {"label": {"max_actors": 1}, "features": {"max_actors": 1}},
        "models": {"store": s3_models, "registry": "s3://bundles", "bundle": "registry:current"},
        "train": {
            "storage": "s3://checkpoints",
            "epochs_stage1": 1,
            "epochs_stage2": 2,
            "keep_checkpoints": 1,
        },
    }
    (folder / "annotator.yaml").write_text(yaml.safe_dump(config))
    yield folder / "annotator.yaml"
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def nights(blind_cluster, configmap, wording_manifest, small_dir, s3_server, tmp_path_factory):
    work = tmp_path_factory.mktemp("two-nights")
    for bucket in ("archive", "bundles", "checkpoints", "review", "annotations"):
        make_bucket(s3_server, bucket)
    # Night 1's calls (the wording-only corpus' utterances, four to a call) and night 2's files.
    local = review_calls(work / "calls", wording_manifest, sentences=2)
    upload_dir(s3_server, work / "calls", "archive/2026-12-01")
    truth = {f"s3://archive/2026-12-01/{Path(k).name}": v for k, v in local.items()}
    night2 = work / "night-2"
    night2.mkdir()
    for call in sorted(local)[:2]:
        shutil.copy(call, night2 / f"next-{Path(call).name}")
    upload_dir(s3_server, night2, "archive/2026-12-02")
    config = str(configmap)
    submit = blind_cluster.submit
    py = [sys.executable, "-m"]

    logs = {}
    # The first bundle: the small profile's untrained one, pushed and made current. (From the
    # user's machine: `annotator bundles push`, which talks to S3 only.)
    pushed = CliRunner().invoke(
        main,
        ["bundles", "push", str(small_dir / "bundle"), "--promote", "current", "--config", config],
    )
    assert pushed.exit_code == 0, pushed.output
    logs["night-1"] = submit(
        *py, "jobs.annotate", "s3://archive/2026-12-01/", "--out", OUT, "--config", config
    )
    logs["compact"] = submit(*py, "annotator.cli", "compact", OUT, "--config", config)
    logs["export"] = submit(
        *py, "annotator.cli", "review", "export", OUT, "--to", REVIEW,
        "--budget", "1000", "--per-label", "1000", "--config", config,
    )  # fmt: skip
    fs = s3_filesystem(s3_server)
    tasks = json.loads(fs.cat(f"{REVIEW}/tasks.json"))
    reviewed = [
        {
            **t,
            "id": k + 1,
            "annotations": [labelstudio_annotation(k + 1, _heard(truth, t), "2026-12-02T09:00Z")],
        }
        for k, t in enumerate(tasks)
    ]
    fs.pipe(f"{REVIEW}/export.json", json.dumps(reviewed).encode())
    manifest = f"{REVIEW}/reviewed.jsonl"
    logs["import"] = submit(
        *py, "annotator.cli", "review", "import", f"{REVIEW}/export.json", "--output", OUT,
        "--manifest", manifest, "--test-share", "0.5", "--config", config,
    )  # fmt: skip
    served = Registry("s3://bundles", s3_server).resolve("current")
    logs["retrain"] = submit(
        # The bundle goes to the head's own disk (its TMPDIR, which no other node sees), and
        # reaches serving only through the registry.
        *py, "jobs.retrain", "--manifest", manifest, "--out", f"{blind_cluster.scratch}/retrained",
        "--promote", "current", "--config", config,
    )  # fmt: skip
    logs["night-2"] = submit(
        *py, "jobs.annotate", "s3://archive/2026-12-02/", "--out", OUT, "--config", config
    )
    return {
        "truth": truth,
        "tasks": tasks,
        "manifest": manifest,
        "served": served,
        "logs": logs,
        "config": config,
    }


def test_the_second_night_is_labelled_by_the_bundle_retrained_on_the_first(nights, s3_server):
    registry = Registry("s3://bundles", s3_server)
    pointer = registry.pointer("current")
    retrained = pointer["version"]
    assert pointer["previous"] == nights["served"] != retrained
    assert f"pushed {retrained}" in nights["logs"]["retrain"]
    assert registry.meta(retrained)["extra"]["trained"] is True
    # Both stages ran on Ray Train and the held-out evaluation printed its figures.
    assert '"ua"' in nights["logs"]["retrain"]
    ann = Annotations(OUT, s3_server)
    by_night = dict(
        ann.sql(
            "SELECT split_part(source_uri, '/', 4) AS night, list(DISTINCT bundle_version) "
            "FROM segments GROUP BY 1"
        ).fetchall()
    )
    assert by_night == {"2026-12-01": [nights["served"]], "2026-12-02": [retrained]}
    runs = ann.sql("SELECT bundle_version FROM runs ORDER BY started_at").fetchall()
    assert [r[0] for r in runs] == [nights["served"], retrained]
    (files,) = ann.sql("SELECT count(*) FROM files").fetchall()[0]
    assert files == len(nights["truth"]) + 2
    ann.close()
    # Compaction ran on the first night's commits.
    assert re.search(r"segments: \d+ → 1 files", nights["logs"]["compact"])


def test_every_segment_went_out_for_review_and_came_back_labelled_as_heard(nights, s3_server):
    truth, tasks = nights["truth"], nights["tasks"]
    examples = read_manifest(nights["manifest"], s3=s3_server)
    utterances = sum(len(spans) for spans in truth.values())
    assert len(tasks) == len(examples) >= 0.9 * utterances
    heard = {(t["data"]["source_uri"], t["data"]["start_s"]): _heard(truth, t) for t in tasks}
    assert all(heard[(e.audio_uri, e.start_s)] == e.label for e in examples)
    assert all(e.audio_uri.startswith("s3://archive/") for e in examples)
    sides = {}
    for e in examples:
        sides.setdefault(e.audio_uri, set()).add(e.split)
    assert all(len(s) == 1 for s in sides.values())  # a call is on one side only
    assert {"train", "test"} <= set().union(*sides.values())


def test_review_retrain_on_blind_nodes_beats_the_served_bundle(
    nights, blind_cluster, s3_server, tmp_path
):
    """The review loop's own retraining (stage 2 from the served bundle, no stage 1), this
    process the driver: the served bundle by its registry version, the manifest and its audio on
    S3; the training workers and the evaluation actor on blind nodes."""
    config = tmp_path / "review.yaml"
    settings = yaml.safe_load(Path(nights["config"]).read_text())
    settings["train"]["epochs_stage2"] = 10
    config.write_text(yaml.safe_dump(settings))
    with blind_cluster.connected():
        run = CliRunner().invoke(
            main,
            [
                "review", "retrain", nights["manifest"], "--bundle",
                f"registry:{nights['served']}", "--out", str(tmp_path / "new"),
                "--config", str(config),
            ],
        )  # fmt: skip
    assert run.exit_code == 0, run.output
    print(run.output)
    ua = review_retrain_ua(run.output)
    assert set(ua) == {"old", "new"}
    assert ua["old"] <= 0.5  # the served bundle never heard these words
    assert ua["new"] >= ua["old"] + 0.3
