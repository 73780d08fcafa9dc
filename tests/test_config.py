from __future__ import annotations

import pytest

from annotator.config import ConfigError, StagesConfig, load_config


def test_yaml_then_env_override(tmp_path, monkeypatch):
    path = tmp_path / "annotator.yaml"
    path.write_text(
        "output: /data/out\n"
        "audio:\n  channels: split\n  max_segment_s: 20\n"
        "stages:\n  asr:\n    batch_size: 4\n    max_actors: 2\n"
    )
    monkeypatch.setenv("ANNOTATOR_STAGES__ASR__BATCH_SIZE", "16")
    monkeypatch.setenv("ANNOTATOR_OUTPUT", "s3://bucket/prefix")
    config = load_config(path)
    assert config.stages.asr.batch_size == 16  # env wins over YAML
    assert config.stages.asr.max_actors == 2  # YAML kept where env is silent
    assert config.output == "s3://bucket/prefix"
    assert config.audio.channels == "split"
    assert config.audio.max_segment_s == 20.0
    assert config.stages.label.batch_size == 64  # untouched default


def test_wrong_type_names_the_field(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("stages:\n  asr:\n    batch_size: lots\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert "stages.asr.batch_size" in message
    assert "'lots'" in message
    assert "ANNOTATOR_STAGES__ASR__BATCH_SIZE" in message
    assert "Traceback" not in message


def test_unknown_field_and_bad_choice(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("audio:\n  channels: stereo\n  sample_rte: 8000\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert "audio.channels" in message
    assert "audio.sample_rte" in message


def test_bad_env_value_is_reported(monkeypatch):
    monkeypatch.setenv("ANNOTATOR_STAGES__LABEL__NUM_GPUS", "-1")
    with pytest.raises(ConfigError, match=r"stages\.label\.num_gpus"):
        load_config()


def test_paper_profile_defaults_and_yaml_over_profile(tmp_path):
    path = tmp_path / "paper.yaml"
    path.write_text("profile: paper\nstages:\n  asr:\n    num_gpus: 0.5\n    per_gpu: 1\n")
    config = load_config(path)
    assert config.models.llm == "Qwen/Qwen2.5-7B-Instruct"
    assert config.stages.asr.num_gpus == 0.5
    assert config.stages.label.num_gpus == 0.35  # from the profile
    assert load_config().models.llm == "small:llm"


def test_unreadable_and_non_mapping_files(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "nope.yaml")
    path = tmp_path / "list.yaml"
    path.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(path)


def test_env_override_of_one_stage_field_keeps_the_others(monkeypatch):
    monkeypatch.setenv("ANNOTATOR_STAGES__FEATURES__BATCH_SIZE", "1")
    config = load_config()
    assert config.stages.features.batch_size == 1
    assert config.stages.features.num_cpus == StagesConfig().features.num_cpus == 0.25


def test_a_fixed_concurrency_is_refused_with_what_replaced_it(tmp_path):
    path = tmp_path / "old.yaml"
    path.write_text("stages:\n  asr:\n    concurrency: 2\n")
    with pytest.raises(ConfigError, match=r"stages\.asr.*pools follow the cluster"):
        load_config(path)


def test_model_stages_must_fit_one_gpu(tmp_path):
    path = tmp_path / "greedy.yaml"
    path.write_text("profile: paper\nstages:\n  asr:\n    per_gpu: 3\n")
    with pytest.raises(ConfigError, match=r"emoq bundle ask for 1\.2 of every GPU \(asr 3×0\.25"):
        load_config(path)
    paper = load_config(None, profile="paper").stages
    assert sum(s.num_gpus * s.per_gpu for s in (paper.asr, paper.features, paper.label)) == 0.95
    # Each kind's stages are checked as they run together: ASR with that kind's own.
    path.write_text("profile: paper\nstages:\n  emosllm:\n    num_gpus: 0.6\n")
    with pytest.raises(ConfigError, match=r"emosllm bundle ask for 1\.45 of every GPU"):
        load_config(path)
    path.write_text("profile: paper\nstages:\n  qieemo:\n    num_gpus: 0.45\n")
    assert load_config(path).stages.qieemo.num_gpus == 0.45  # 0.5 + 0.45: fits beside ASR


def test_the_gpu_pipeline_benchmark_serves_paper_random_under_the_paper_config(tmp_path):
    """benchmarks.gpu_pipeline's overrides: cluster/paper.yaml's stages with every model a
    paper-random folder under the given home, decoding capped (a random Whisper never stops)."""
    from annotator.models.profiles import resolve_model
    from benchmarks.gpu_pipeline import PAPER_YAML, paper_random_models

    config = load_config(PAPER_YAML, models=paper_random_models(str(tmp_path), 100))
    assert config.stages.label.num_gpus == 0.35 and config.stages.asr.per_gpu == 2
    assert config.models.asr.max_new_tokens == 100 and config.models.asr.device == "cuda"
    names = [config.models.bundle, config.models.llm, config.models.hubert, config.models.asr.model]
    for name in names:
        (tmp_path / "paper-random" / name.split(":")[1]).mkdir(parents=True)
        assert resolve_model(name, config.models.home) == str(tmp_path / "paper-random" / name[13:])


def test_each_kind_trains_on_its_own_schedule_per_profile(tmp_path):
    """A kind's schedule (Kind.schedule → train.schedules.<kind>) takes the place of the
    top-level fields for that kind only: MiSTER-E's focal γ 3 in both profiles, and on the paper
    profile the published code's 1e-5 for 100 epochs; the user's own schedule wins over the
    profile's; a schedule for no kind is refused."""
    small = load_config(None)
    assert small.train.gamma == 2.0 and small.for_kind("mister_e").train.gamma == 3.0
    assert small.for_kind("emoq").train == small.train  # no schedule of its own
    paper = load_config(None, profile="paper")
    mister_e = paper.for_kind("mister_e").train
    assert (mister_e.lr_stage2, mister_e.epochs_stage2, mister_e.gamma) == (1e-5, 100, 3.0)
    assert mister_e.lr_stage1 == paper.train.lr_stage1  # not published: the top-level one
    assert paper.train.lr_stage2 == 2e-4 and small.train.lr_stage2 == 3e-3
    path = tmp_path / "c.yaml"
    path.write_text(
        "profile: paper\ntrain:\n  schedules:\n    mister_e:\n      lr_stage2: 3.0e-5\n"
    )
    mine = load_config(path).for_kind("mister_e").train
    assert (mine.lr_stage2, mine.epochs_stage2) == (3e-5, 100)
    with pytest.raises(ConfigError, match="no kind named"):
        load_config(None, train={"schedules": {"misterE": {"gamma": 1.0}}})
