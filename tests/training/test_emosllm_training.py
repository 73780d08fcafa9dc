"""An EmoSLLM bundle trained on Ray Train (2 CPU workers) from the small profile's untrained one,
through the CLI, then scored on the held-out voices by ``annotator eval`` (a Ray actor serving it
with vLLM) — and the same posteriors from transformers + PEFT in this process."""

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

pytestmark = pytest.mark.vllm  # Ray Train, a Ray actor and vLLM: with the slow tests

EPOCHS = 8


@pytest.fixture(scope="module")
def trained(synth_manifest, small_home, ray_local, tmp_path_factory):
    work = tmp_path_factory.mktemp("emosllm")
    config = work / "config.yaml"
    train = {"storage": str(work / "checkpoints"), "epochs_stage2": EPOCHS, "keep_checkpoints": 1}
    config.write_text(yaml.safe_dump({"models": {"home": str(small_home)}, "train": train}))
    args = ["train", "emosllm", "--manifest", str(synth_manifest), "--out", str(work / "bundle")]
    run = CliRunner().invoke(main, [*args, "--config", str(config)])
    assert run.exit_code == 0, run.output
    print(run.output)
    return work, config, Bundle.load(work / "bundle")


def test_training_runs_equal_full_steps_and_exports_mapper_and_adapter(trained, small_home):
    from safetensors.torch import load_file

    from annotator.kinds.emosllm.model import WEIGHTS
    from training.common import checkpoint_state, latest_checkpoint

    work, _, bundle = trained
    start = Bundle.load(small_home / "small" / "emosllm-bundle")
    assert bundle.kind == "emosllm" and bundle.extra["trained"] is True
    assert bundle.extra["started_from"] == start.version != bundle.version
    assert bundle.soft_tokens == start.soft_tokens and bundle.base == start.base
    checkpoint = latest_checkpoint(str(work / "checkpoints"), "emosllm")
    progress = json.loads((Path(checkpoint) / "progress.json").read_text())
    assert progress["epoch"] == EPOCHS - 1
    # 96 training clips over 2 workers, global batch 8: 12 steps on each rank, every one full.
    assert progress["steps_per_rank"] == [12, 12]
    assert progress["global_batch_min"] == progress["global_batch_max"] == 8
    state = checkpoint_state(checkpoint)
    mapper = load_file(bundle.root / WEIGHTS)
    assert {f"mapper.{k}" for k in mapper} == {k for k in state if k.startswith("mapper.")}
    for name, tensor in mapper.items():
        assert torch.equal(tensor, state[f"mapper.{name}"]), name
    adapter = load_file(bundle.lora_dir / "adapter_model.safetensors")
    untrained = load_file(start.lora_dir / "adapter_model.safetensors")
    assert set(adapter) == set(untrained)
    for name, tensor in adapter.items():
        module, _, param = name.rpartition(".")
        assert torch.equal(tensor, state[f"llm.{module}.default.{param}"]), name
    assert any(not torch.equal(adapter[n], untrained[n]) for n in adapter)  # the LoRA trained
    assert all(state[k].dtype == torch.float32 for k in state)  # trainables stay fp32


def test_it_recognises_held_out_voices_as_served_and_as_the_reference_computes(
    trained, synth_manifest
):
    from annotator.config import load_config
    from annotator.models.labeler.reference import ReferenceLabeler
    from training.common import model_path
    from training.evaluate import posteriors

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
    # Two voices it never heard, four emotions (chance 0.25); measured 0.708 (README).
    assert result["ua"] >= 0.5
    settings = load_config(config)
    reference = ReferenceLabeler(
        model_path(settings.models.llm, settings), bundle.emotion_token_ids, bundle.lora_dir
    )
    here, _ = posteriors(settings, bundle.root, held_out, labeler=reference)
    np.testing.assert_allclose(np.asarray(result["posteriors"]), here, atol=1e-3)
