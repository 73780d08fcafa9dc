"""``annotator train cv``: the paper's five leave-one-session-out IEMOCAP folds as one job, on an
IEMOCAP-layout corpus spoken by espeak-ng, each fold a Ray Train run scored as served (vLLM).

What is tested is the protocol (five folds, each holding out its own session's speakers, scored,
summarised; MELD's dev split choosing the checkpoint), not what the model learns (that is
test_retrain's). To keep the suite short the folds run ``--ablation no-stage1`` (stage 2 from the
initialised EmoQ-Former, so one Ray Train run per fold, which walks that ablation through the
CLI too) on one Ray Train worker; stage 1 on Ray Train is test_retrain's."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from annotator.cli import main
from annotator.models.bundle import Bundle
from tests.factories import iemocap_corpus
from training.data import read_manifest

pytestmark = pytest.mark.vllm


@pytest.fixture(scope="module")
def cv_run(small_home, ray_local, tmp_path_factory):
    work = tmp_path_factory.mktemp("cv")
    root = iemocap_corpus(work / "IEMOCAP", per_class=1)
    config = work / "config.yaml"
    train = {"storage": str(work / "checkpoints"), "epochs_stage2": 1, "num_workers": 1}
    config.write_text(yaml.safe_dump({"models": {"home": str(small_home)}, "train": train}))
    args = ["train", "cv", "iemocap", str(root), "--out", str(work / "cv"), "--config", str(config)]
    args += ["--ablation", "no-stage1"]
    first = CliRunner().invoke(main, args)
    assert first.exit_code == 0, first.output
    return work, args, first.output


def test_five_folds_each_hold_out_one_session(cv_run):
    work, _, output = cv_run
    summary = json.loads((work / "cv" / "summary.json").read_text())
    assert list(summary["folds"]) == [f"session{k}" for k in range(1, 6)]
    for k in range(1, 6):
        examples = read_manifest(work / "cv" / f"session{k}" / "manifest.jsonl")
        test = [e for e in examples if e.split == "test"]
        train = [e for e in examples if e.split == "train"]
        assert {e.fold for e in test} == {k} and k not in {e.fold for e in train}
        assert not {e.speaker for e in test} & {e.speaker for e in train}  # speaker-independent
        assert summary["folds"][f"session{k}"]["examples"] == len(test) == 4
        assert (work / "cv" / f"session{k}" / "eval" / "confusion.png").is_file()
    # Five bundles, each its own training run, of the ablation asked for.
    assert len({f["bundle_version"] for f in summary["folds"].values()}) == 5
    for k in range(1, 6):
        bundle = Bundle.load(work / "cv" / f"session{k}" / "bundle")
        assert bundle.extra["stage1"] == {"loss": "mal", "epochs": 0}
        assert bundle.extra["fold"] == f"session{k}"
    assert (work / "cv" / "confusion.png").is_file()
    print(output)


def test_summary_is_the_mean_and_std_of_the_folds(cv_run):
    work, _, output = cv_run
    summary = json.loads((work / "cv" / "summary.json").read_text())
    for metric in ("wa", "ua", "wf1"):
        per_fold = [f[metric] for f in summary["folds"].values()]
        assert summary["mean"][metric] == pytest.approx(np.mean(per_fold))
        assert summary["std"][metric] == pytest.approx(np.std(per_fold))
    evals = [
        json.loads((work / "cv" / f"session{k}" / "eval" / "eval.json").read_text())
        for k in range(1, 6)
    ]
    assert summary["confusion"] == np.sum([e["confusion"] for e in evals], axis=0).tolist()
    assert np.sum(summary["confusion"]) == 20
    assert f"UA {summary['mean']['ua']:.3f} ± {summary['std']['ua']:.3f}" in output


def test_rerun_skips_the_finished_folds(cv_run):
    work, args, first = cv_run
    stamps = {p: p.stat().st_mtime_ns for p in (work / "cv").glob("session*/eval/eval.json")}
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 0, again.output
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps

    def summary_line(output: str) -> str:
        return next(line for line in output.splitlines() if line.startswith("5 folds:"))

    assert summary_line(again.output) == summary_line(first)


@pytest.fixture(scope="module")
def meld_run(small_home, ray_local, tmp_path_factory):
    from tests.factories import meld_corpus

    work = tmp_path_factory.mktemp("meld")
    root = meld_corpus(work / "MELD", {"train": 4, "dev": 2, "test": 1})
    train = {
        "storage": str(work / "checkpoints"),
        "epochs_stage2": 3,
        "keep_checkpoints": 3,
        "label_set": "meld4",
        "num_workers": 1,
    }
    config = work / "config.yaml"
    config.write_text(yaml.safe_dump({"models": {"home": str(small_home)}, "train": train}))
    args = ["train", "cv", "meld", str(root), "--classes", "4", "--out", str(work / "cv")]
    args += ["--ablation", "no-stage1"]
    run = CliRunner().invoke(main, [*args, "--config", str(config)])
    assert run.exit_code == 0, run.output
    return work


def test_meld_exports_the_stage2_epoch_with_the_best_dev_ua_as_served(meld_run):
    """Stage 2 scores MELD's dev split every epoch and the bundle is the best epoch's; the dev UA
    it was chosen by is the UA the exported bundle gets on dev when served (vLLM)."""
    work = meld_run
    fold = work / "cv" / "meld"
    result = json.loads((fold / "eval" / "eval.json").read_text())
    chosen = result["checkpoint"]
    epochs = [
        json.loads(p.read_text())
        for p in (work / "checkpoints").glob("cv-*-meld-2/checkpoint_*/progress.json")
    ]
    assert sorted(e["epoch"] for e in epochs) == [0, 1, 2]
    assert chosen["dev_ua"] == max(e["dev_ua"] for e in epochs)
    dev = [e for e in read_manifest(fold / "manifest.jsonl") if e.split == "dev"]
    assert len(dev) == result["dev"]["examples"] == 8
    assert result["examples"] == 4  # scored on test
    # Served by vLLM, the exported bundle scores on dev what its checkpoint was chosen by.
    assert result["dev"]["ua"] == pytest.approx(chosen["dev_ua"])
    assert result["dev"]["wa"] == pytest.approx(chosen["dev_wa"])
    print("dev UA per epoch:", {e["epoch"]: round(e["dev_ua"], 3) for e in epochs})
