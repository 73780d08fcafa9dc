"""What the evaluation actor asks Ray for, per config (the actor itself runs in test_retrain)."""

from __future__ import annotations

from pathlib import Path

import pytest

from annotator.config import load_config
from training.evaluate import evaluation_resources

PAPER = Path(__file__).parents[2] / "cluster" / "paper.yaml"


def test_cpu_config_asks_for_no_gpu_and_the_features_and_label_stages_share():
    config = load_config(None)
    stages = config.stages
    assert evaluation_resources(config) == {
        "num_cpus": stages.features.num_cpus + stages.label.num_cpus,
        "num_gpus": 0.0,
        "memory": int((stages.features.memory_gb + stages.label.memory_gb) * 1024**3),
    }


def test_train_use_gpu_asks_for_a_whole_gpu():
    config = load_config(PAPER)
    assert config.train.use_gpu
    assert evaluation_resources(config)["num_gpus"] == 1.0


def test_without_use_gpu_the_stages_gpu_shares_decide():
    config = load_config(PAPER, train={"use_gpu": False})
    stages = config.stages
    assert evaluation_resources(config)["num_gpus"] == pytest.approx(
        stages.features.num_gpus + stages.label.num_gpus
    )
    assert evaluation_resources(config)["num_gpus"] > 0


def test_asr_transcripts_add_the_asr_stage():
    config = load_config(PAPER, train={"transcripts": "asr"})
    stages = config.stages
    assert evaluation_resources(config)["num_cpus"] == pytest.approx(
        stages.features.num_cpus + stages.label.num_cpus + stages.asr.num_cpus
    )


@pytest.mark.parametrize("kind", ["emosllm", "qieemo"])
def test_another_kind_asks_for_its_own_stages(kind):
    from annotator.kinds import KINDS

    config = load_config(None, stages={"emosllm": {"num_cpus": 0.75}, "qieemo": {"num_cpus": 1.5}})
    stages = [getattr(config.stages, name) for name in KINDS[kind].stages]
    got = evaluation_resources(config, kind)
    assert got["num_cpus"] == pytest.approx(sum(s.num_cpus for s in stages))
    assert got["memory"] == int(sum(s.memory_gb for s in stages) * 1024**3)
