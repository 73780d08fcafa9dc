"""A Qieemo bundle trained on Ray Train (2 CPU workers) from the small profile's untrained one,
through the CLI, then scored by ``annotator eval`` in a Ray actor as ``QieemoStage`` serves it.

What is tested is the wiring (equal steps and the global batch on every rank, the encoder's
features standardised by the training split's statistics, the trained weights exported,
evaluation as served); what it learns on held-out voices is measured by ``benchmarks/kinds.py``."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner

from annotator.cli import main
from annotator.models.bundle import Bundle
from training.data import read_manifest

pytestmark = pytest.mark.vllm  # Ray Train and a Ray actor: with the slow tests


@pytest.fixture(scope="module")
def trained(synth_manifest, small_home, ray_local, tmp_path_factory):
    work = tmp_path_factory.mktemp("qieemo")
    config = work / "config.yaml"
    train = {"storage": str(work / "checkpoints"), "epochs_stage2": 3}
    config.write_text(yaml.safe_dump({"models": {"home": str(small_home)}, "train": train}))
    args = ["train", "qieemo", "--manifest", str(synth_manifest), "--out", str(work / "bundle")]
    run = CliRunner().invoke(main, [*args, "--config", str(config)])
    assert run.exit_code == 0, run.output
    print(run.output)
    return work, config, Bundle.load(work / "bundle")


def test_training_runs_equal_full_steps_and_exports_the_trained_weights(trained, small_home):
    from safetensors.torch import load_file

    from annotator.kinds.qieemo.model import WEIGHTS
    from training.common import checkpoint_state, latest_checkpoint

    work, _, bundle = trained
    start = Bundle.load(small_home / "small" / "qieemo-bundle")
    assert bundle.kind == "qieemo" and bundle.extra["trained"] is True
    assert bundle.extra["started_from"] == start.version != bundle.version
    checkpoint = latest_checkpoint(str(work / "checkpoints"), "qieemo")
    progress = json.loads((Path(checkpoint) / "progress.json").read_text())
    assert progress["epoch"] == 2
    # 96 training clips over 2 workers, global batch 8: 12 steps on each rank, every one full.
    assert progress["steps_per_rank"] == [12, 12]
    assert progress["global_batch_min"] == progress["global_batch_max"] == 8
    exported, before = load_file(bundle.root / WEIGHTS), load_file(start.root / WEIGHTS)
    state = checkpoint_state(checkpoint)
    assert set(exported) == set(state) == set(before)
    for name, tensor in exported.items():
        assert torch.equal(tensor, state[name]), name
    assert any(not torch.equal(exported[n], before[n]) for n in exported)  # it was trained
    # Standardised by the training split's statistics: starting from identity, the mean moved
    # further from 0 than training alone could take it (36 AdamW steps of ~lr_stage2, 3e-3).
    assert before["feature_mean"].abs().max() == 0
    assert exported["feature_mean"].abs().max() > 0.1


def test_eval_scores_it_in_an_actor_as_serving_does(trained, synth_manifest):
    from annotator.config import load_config
    from annotator.kinds.qieemo.scoring import posteriors as qieemo_posteriors

    work, config, bundle = trained
    out = work / "eval"
    args = ["eval", str(bundle.root), "--manifest", str(synth_manifest), "--split", "test"]
    run = CliRunner().invoke(main, [*args, "--out", str(out), "--config", str(config)])
    assert run.exit_code == 0, run.output
    print(run.output)
    assert re.search(r"\d+ examples: WA [\d.]+ · UA [\d.]+", run.output)
    result = json.loads((out / "eval.json").read_text())
    held_out = [e for e in read_manifest(synth_manifest) if e.split == "test"]
    assert result["examples"] == len(held_out) and result["bundle_version"] == bundle.version
    here, _ = qieemo_posteriors(load_config(config), bundle, held_out)
    np.testing.assert_allclose(np.asarray(result["posteriors"]), here, atol=1e-5)


@pytest.mark.parametrize("kind", ["qieemo", "emosllm"])
def test_a_manifest_without_a_train_split_is_refused_before_any_worker_starts(
    kind, small_home, synth_manifest, tmp_path
):
    from annotator.config import load_config
    from annotator.kinds.emosllm.train import train_emosllm
    from annotator.kinds.qieemo.train import train_qieemo
    from training.data import ManifestError, write_manifest

    held_out = tmp_path / "test-only.jsonl"
    write_manifest([e for e in read_manifest(synth_manifest) if e.split == "test"], held_out)
    config = load_config(None, models={"home": str(small_home)})
    train = {"qieemo": train_qieemo, "emosllm": train_emosllm}[kind]
    with pytest.raises(ManifestError, match="no train split"):
        train(config, held_out, small_home / "small" / f"{kind}-bundle", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_clips_features_do_not_depend_on_its_batch_streamed_or_held(synth_manifest, small_home):
    """Streamed (``train.features: stream``), each clip is encoded alone when its batch is drawn,
    so its features are the same whichever clips share the batch, every epoch; held
    (``memory``), each clip was encoded once, eight at a time in the share's order, and every
    batch pads the held frames. Either way a clip's real frames are the same in every batch it
    is drawn in, and the padding is zero."""
    from annotator.config import load_config
    from annotator.kinds.qieemo.train import BatchEncoder, Clip

    bundle = Bundle.load(small_home / "small" / "qieemo-bundle")
    train = [e for e in read_manifest(synth_manifest) if e.split == "train"][:12]
    clips = [Clip(e, bundle.labels.index(e.label)) for e in train]
    config = {"models": {"home": str(small_home)}}
    held = BatchEncoder(load_config(None, **config, train={"features": "memory"}), bundle, clips)
    streamed = BatchEncoder(load_config(None, **config), bundle, clips)
    assert not held.streams() and streamed.streams()
    lengths = {id(c): len(streamed.reader.audio(c.example)) for c in clips}
    assert len(set(lengths.values())) > 3  # clips of different lengths: padding in every batch
    for encoder in (held, streamed):
        for batch_clips in ([clips[9], clips[2], clips[11]], clips[:8], [clips[2], clips[0]]):
            batch = encoder(batch_clips)
            for k, clip in enumerate(batch_clips):
                alone = encoder([clip])
                n = int(alone["mask"].sum())
                assert int(batch["mask"][k].sum()) == n
                torch.testing.assert_close(batch["blocks"][k, :, :n], alone["blocks"][0, :, :n])
                torch.testing.assert_close(batch["logits"][k, :n], alone["logits"][0, :n])
                assert batch["blocks"][k, :, n:].abs().sum() == 0
