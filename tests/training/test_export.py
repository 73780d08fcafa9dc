"""Export from a stage-2 checkpoint's tensors: the same bundle as building the whole stage-2
model, without ever building the base LLM; checkpoints that do not fit are refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from annotator.config import load_config
from tests.factories import assert_same_bundle, export_bundle_by_model, stage2_checkpoint


@pytest.fixture(scope="module")
def config(small_home):
    return load_config(None, models={"home": str(small_home)})


@pytest.fixture(scope="module")
def checkpoint(config, small_dir, tmp_path_factory) -> Path:
    # The small profile's untrained bundle holds an EmoQ-Former as stage 1 writes it.
    return stage2_checkpoint(
        config, small_dir / "bundle", tmp_path_factory.mktemp("ckpt") / "checkpoint", seed=3
    )


@pytest.fixture(scope="module")
def reference(config, small_dir, checkpoint, tmp_path_factory):
    return export_bundle_by_model(
        config, small_dir / "bundle", str(checkpoint), tmp_path_factory.mktemp("ref") / "bundle"
    )


def test_export_from_tensors_writes_the_bundle_the_model_export_wrote(
    config, small_dir, checkpoint, reference, tmp_path
):
    from annotator.kinds.emoq.export import export_bundle

    bundle = export_bundle(config, small_dir / "bundle", str(checkpoint), tmp_path / "bundle")
    assert_same_bundle(bundle.root, reference.root)
    assert bundle.version == reference.version
    # The trained weights arrived, not initial ones: the adapter is the checkpoint's LoRA.
    state = load_file(checkpoint / "state.safetensors")
    adapter = load_file(bundle.lora_dir / "adapter_model.safetensors")
    key = "base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight"
    assert adapter[key].abs().max() > 0
    assert torch.equal(adapter[key], state["llm." + key.replace("lora_B.", "lora_B.default.")])
    lora = json.loads((bundle.lora_dir / "adapter_config.json").read_text())
    assert lora["base_model_name_or_path"] == config.models.llm
    assert lora["r"] == config.train.lora_rank and lora["inference_mode"] is True


def test_export_never_builds_the_base_llm(
    config, small_dir, checkpoint, reference, tmp_path, monkeypatch
):
    import peft
    import transformers
    from transformers.models.qwen2 import modeling_qwen2

    from annotator.kinds.emoq.export import export_bundle

    def refuse(*args, **kwargs):
        raise AssertionError("the export built the base LLM")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", refuse)
    monkeypatch.setattr(transformers.AutoModel, "from_pretrained", refuse)
    monkeypatch.setattr(modeling_qwen2.Qwen2ForCausalLM, "__init__", refuse)
    monkeypatch.setattr(modeling_qwen2.Qwen2Model, "__init__", refuse)
    monkeypatch.setattr(peft, "get_peft_model", refuse)
    monkeypatch.setattr(peft.PeftModel, "__init__", refuse)
    with pytest.raises(AssertionError, match="built the base LLM"):  # the guards do catch it
        export_bundle_by_model(config, small_dir / "bundle", str(checkpoint), tmp_path / "old")
    bundle = export_bundle(config, small_dir / "bundle", str(checkpoint), tmp_path / "bundle")
    assert bundle.version == reference.version


def _edited(checkpoint: Path, dst: Path, drop=(), add=None) -> str:
    state = load_file(checkpoint / "state.safetensors")
    for key in drop:
        del state[key]
    state.update(add or {})
    dst.mkdir()
    save_file(state, dst / "state.safetensors")
    return str(dst)


@pytest.mark.parametrize(
    ("drop", "add", "says"),
    [
        (
            ["llm.base_model.model.model.layers.0.self_attn.q_proj.lora_A.default.weight"],
            {},
            "1 missing",
        ),
        (["projector.net.2.bias"], {}, "1 missing"),
        (["former.queries"], {}, "1 missing"),
        ([], {"llm.base_model.model.lm_head.weight": torch.zeros(2, 2)}, "1 unexpected"),
        ([], {"classifier.weight": torch.zeros(2, 2)}, "1 unexpected"),
    ],
)
def test_export_refuses_a_checkpoint_whose_keys_do_not_fit(
    config, small_dir, checkpoint, tmp_path, drop, add, says
):
    from annotator.kinds.emoq.export import export_bundle
    from training.llm import ExportError

    edited = _edited(checkpoint, tmp_path / "edited", drop, add)
    with pytest.raises(ExportError, match=says):
        export_bundle(config, small_dir / "bundle", edited, tmp_path / "bundle")
    assert not (tmp_path / "bundle").exists()


def test_export_refuses_a_checkpoint_of_another_lora_rank(config, small_dir, checkpoint, tmp_path):
    from annotator.kinds.emoq.export import export_bundle
    from training.llm import ExportError

    other = config.model_copy(update={"train": config.train.model_copy(update={"lora_rank": 4})})
    with pytest.raises(ExportError, match="LoRA rank 4 needs"):
        export_bundle(other, small_dir / "bundle", str(checkpoint), tmp_path / "bundle")


def test_export_refuses_a_projector_of_another_width(config, small_dir, checkpoint, tmp_path):
    from annotator.kinds.emoq.export import export_bundle
    from training.llm import ExportError

    state = load_file(checkpoint / "state.safetensors")
    wider = {"projector.net.0.weight": torch.zeros(7, state["projector.net.0.weight"].shape[1])}
    edited = _edited(checkpoint, tmp_path / "edited", add=wider)
    with pytest.raises(ExportError, match="size mismatch"):
        export_bundle(config, small_dir / "bundle", edited, tmp_path / "bundle")
