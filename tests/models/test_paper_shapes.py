"""The paper-random profile: the paper models' shapes and token layouts, random weights.

The full build (~22 GB) is never made here; the shapes are checked on PyTorch's meta device, the
tokenizers are built for real (they are small), and the weight writer and the random Whisper
conversion run on small configurations of the same classes."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import HubertConfig, HubertModel, Qwen2Config, Qwen2ForCausalLM

from annotator.models.paper_shapes import PUBLISHED, parameter_table, write_random_weights
from annotator.models.tokenizer_layouts import (
    build_qwen_tokenizer,
    build_roberta_tokenizer,
    build_whisper_tokenizer,
)


def test_paper_shapes_have_the_published_parameter_counts():
    rows = {r["part"]: r for r in parameter_table()}
    assert set(rows) == set(PUBLISHED)
    # Counted from the released checkpoints: exact.
    for part in ("llm", "text_encoder", "whisper"):
        assert rows[part]["paper_random"] == PUBLISHED[part][1], part
    # HuBERT's paper rounds to 316 M; the large model has 315.4 M without its CTC head.
    assert rows["hubert"]["paper_random"] == pytest.approx(316e6, rel=0.005)
    assert rows["llm"]["bf16_gb"] == pytest.approx(15.23, abs=0.01)


def test_the_llm_tokenizer_has_qwen25_instruct_ids_and_no_audio_token(small_dir, tmp_path):
    tok = build_qwen_tokenizer(tmp_path / "llm", small_dir / "whisper")
    ids = tok.convert_tokens_to_ids(["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|file_sep|>"])
    assert ids == [151_643, 151_644, 151_645, 151_664]
    assert len(tok) == 151_665 <= 152_064  # Qwen2.5's embedding table has 152,064 rows
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>"
    assert "<AUDIO>" not in tok.get_vocab()
    text = tok.apply_chat_template(
        [{"role": "user", "content": "hello"}], tokenize=False, add_generation_prompt=True
    )
    assert text.endswith("<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\n")
    encoded = tok(text)["input_ids"]
    assert encoded.count(151_644) == 3 and max(encoded) < 151_665


def test_the_text_encoder_and_whisper_tokenizers_have_the_real_ids(small_dir, tmp_path):
    roberta = build_roberta_tokenizer(tmp_path / "roberta", small_dir / "whisper")
    assert roberta.convert_tokens_to_ids(["<s>", "<pad>", "</s>", "<unk>", "<mask>"]) == [
        0,
        1,
        2,
        3,
        50_264,
    ]
    encoded = roberta("I am so angry")["input_ids"]
    assert encoded[0] == 0 and encoded[-1] == 2 and len(encoded) > 3

    whisper = build_whisper_tokenizer(tmp_path / "whisper", small_dir / "whisper")
    expected = {
        "<|endoftext|>": 50_257,
        "<|startoftranscript|>": 50_258,
        "<|en|>": 50_259,
        "<|yue|>": 50_358,
        "<|transcribe|>": 50_360,
        "<|notimestamps|>": 50_364,
        "<|0.00|>": 50_365,
        "<|30.00|>": 51_865,
    }
    assert {t: whisper.convert_tokens_to_ids(t) for t in expected} == expected
    assert len(whisper) == 51_866


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_random_weights_stream_into_shards_that_transformers_loads_whole(tmp_path, dtype):
    hubert = HubertConfig(
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        conv_dim=(32,) * 7,
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=4,
        feat_extract_norm="layer",
        do_stable_layer_norm=True,
    )
    qwen = Qwen2Config(
        vocab_size=512,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        tie_word_embeddings=False,
    )
    for cls, config in ((HubertModel, hubert), (Qwen2ForCausalLM, qwen)):
        dst = tmp_path / cls.__name__
        written = write_random_weights(
            cls, config, dst, seed=1, dtype=dtype, max_shard_bytes=40_000
        )
        index = json.loads((dst / "model.safetensors.index.json").read_text())
        shards = sorted(set(index["weight_map"].values()))
        assert len(shards) >= 3  # really sharded
        model, info = cls.from_pretrained(
            dst, dtype=getattr(torch, dtype), output_loading_info=True
        )
        assert not info["missing_keys"] and not info["unexpected_keys"], info
        assert sum(p.numel() for p in model.parameters()) == written
        # The loaded weights are the written ones (nothing re-initialised at load).
        saved = {k: v for shard in shards for k, v in load_file(str(dst / shard)).items()}
        state = model.state_dict()
        assert saved.keys() <= state.keys()
        for name, tensor in saved.items():
            assert torch.equal(state[name], tensor), name
        norms = [n for n in saved if "norm" in n.lower() and n.endswith("weight")]
        assert norms and all(bool((saved[n] == 1).all()) for n in norms)
        weights = [n for n in saved if saved[n].dim() == 2]
        assert all(saved[n].float().std() > 0.01 for n in weights)  # random, not zeros


def _lora_settings(lora_dir) -> dict:
    from peft import LoraConfig

    settings = LoraConfig.from_pretrained(str(lora_dir)).to_dict()
    settings.pop("peft_version", None)
    settings["target_modules"] = sorted(settings["target_modules"])
    return settings


def test_lora_from_the_llm_config_is_the_adapter_peft_makes(small_dir, tmp_path):
    """The paper-random bundle's LoRA is made from the LLM's config, never loading the 7B model:
    on the small LLM it has PEFT's keys and shapes, loads onto the model with PEFT, and leaves
    the base model's outputs unchanged (B is zero)."""
    from peft import PeftModel, get_peft_model, get_peft_model_state_dict
    from transformers import AutoModelForCausalLM

    from annotator.kinds.emoq.untrained import build_untrained_bundle
    from annotator.models.bundle import Bundle
    from annotator.models.lora import LORA_TARGETS, lora_config, untrained_lora_tensors

    llm = small_dir / "llm"
    tensors = untrained_lora_tensors(llm, rank=8, seed=3)
    peft = get_peft_model(AutoModelForCausalLM.from_pretrained(llm), lora_config(8))
    expected = get_peft_model_state_dict(peft)
    assert {k: tuple(v.shape) for k, v in tensors.items()} == {
        k: tuple(v.shape) for k, v in expected.items()
    }
    assert all(not v.any() for k, v in tensors.items() if "lora_B" in k)
    a = tensors["base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"]
    assert a.abs().max() <= 1 / a.shape[1] ** 0.5 and a.std() > 0

    names = {"hubert": "small:hubert", "text_encoder": "small:text-encoder", "llm": "small:llm"}
    args = (small_dir / "text-encoder", small_dir / "hubert", llm, names)
    bundle = build_untrained_bundle(tmp_path / "b", *args, lora_from_config=True)
    reference = Bundle.load(small_dir / "bundle")
    assert bundle.emotion_token_ids == reference.emotion_token_ids
    # As the installed PEFT reads them: the cached profile's adapter may have been written by
    # another PEFT version, which records itself and the fields it knew (0.22 added astra_config).
    assert _lora_settings(bundle.lora_dir) == _lora_settings(reference.lora_dir)
    assert _lora_settings(bundle.lora_dir)["target_modules"] == sorted(LORA_TARGETS)
    base = AutoModelForCausalLM.from_pretrained(llm).eval()
    ids = torch.tensor([[15, 200, 9, 77]])
    with torch.no_grad():
        plain = base(ids).logits
        adapted = PeftModel.from_pretrained(base, bundle.lora_dir).eval()(ids).logits
    assert torch.equal(plain, adapted)


def test_lora_from_the_paper_llm_config_has_gqa_shapes(tmp_path):
    """Qwen2.5-7B's config alone (no weights): 28 layers × q/k/v/o, k and v 512 wide (4 KV
    heads × 128), q and o 3,584."""
    from annotator.models.lora import untrained_lora_tensors
    from annotator.models.paper_shapes import paper_configs

    paper_configs()["llm"].save_pretrained(tmp_path)
    tensors = untrained_lora_tensors(tmp_path, rank=8)
    assert len(tensors) == 28 * 4 * 2
    layer = "base_model.model.model.layers.27.self_attn"
    assert tensors[f"{layer}.q_proj.lora_A.weight"].shape == (8, 3_584)
    assert tensors[f"{layer}.k_proj.lora_B.weight"].shape == (512, 8)
    assert tensors[f"{layer}.o_proj.lora_B.weight"].shape == (3_584, 8)
