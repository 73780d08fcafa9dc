from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from annotator.cli import main
from annotator.models.profiles import PROFILE_MANIFEST, ProfileError, resolve_model, verify_profile


def test_models_init_twice_gives_identical_bytes(tmp_path):
    runner = CliRunner()
    hashes = []
    for name in ("a", "b"):
        result = runner.invoke(main, ["models", "init", "--home", str(tmp_path / name)])
        assert result.exit_code == 0, result.output
        manifest = json.loads((tmp_path / name / "small" / PROFILE_MANIFEST).read_text())
        hashes.append(manifest["files"])
    assert hashes[0] == hashes[1]
    assert {"llm/model.safetensors", "hubert/model.safetensors", "whisper/model.bin"} <= set(
        hashes[0]
    )
    # A second init on an intact build is a no-op, and a damaged one is detected and rebuilt.
    weights = tmp_path / "a" / "small" / "hubert" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8] + b"\0" * 8)
    with pytest.raises(ProfileError, match=r"hubert/model\.safetensors"):
        verify_profile(tmp_path / "a" / "small")
    assert runner.invoke(main, ["models", "init", "--home", str(tmp_path / "a")]).exit_code == 0
    assert verify_profile(tmp_path / "a" / "small")


def test_no_pickle_files_in_profile(small_dir):
    suffixes = {p.suffix for p in small_dir.rglob("*") if p.is_file()}
    assert not suffixes & {".pt", ".pth", ".pkl", ".ckpt"}
    assert (small_dir / "llm" / "model.safetensors").is_file()


def test_resolve_model_names(small_home, tmp_path):
    assert resolve_model("small:llm", small_home).endswith("small/llm")
    assert resolve_model("Qwen/Qwen2.5-7B-Instruct", small_home) == "Qwen/Qwen2.5-7B-Instruct"
    with pytest.raises(ProfileError, match="annotator models init"):
        resolve_model("small:llm", tmp_path)
    (tmp_path / "paper-random" / "llm").mkdir(parents=True)
    assert resolve_model("paper-random:llm", tmp_path) == str(tmp_path / "paper-random" / "llm")
    with pytest.raises(ProfileError, match="models init --profile paper-random"):
        resolve_model("paper-random:hubert", tmp_path)
    assert resolve_model("s3://models/llm", tmp_path) == "s3://models/llm"


def test_tiny_qwen_shape(small_dir):
    config = json.loads((small_dir / "llm" / "config.json").read_text())
    assert config["model_type"] == "qwen2"
    assert config["hidden_size"] // config["num_attention_heads"] >= 32  # vLLM CPU attention
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(small_dir / "llm")
    assert config["vocab_size"] >= len(tok)
    ids = tok.encode("<|im_start|>user\nhi <AUDIO><|im_end|>", add_special_tokens=False)
    assert tok.convert_tokens_to_ids("<|im_start|>") == ids[0]
    assert tok.convert_tokens_to_ids("<|im_end|>") == ids[-1]


def test_tiny_qwen_tokenizer_is_shaped_like_qwen25_instruct(small_dir):
    """Special tokens, pad/eos and chat template as Qwen2.5-Instruct's, and no <AUDIO>: the
    tests walk the road the paper profile takes (the soft token is placed by position)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(small_dir / "llm")
    config = json.loads((small_dir / "llm" / "config.json").read_text())
    generation = json.loads((small_dir / "llm" / "generation_config.json").read_text())
    assert "<AUDIO>" not in tok.get_vocab()
    assert len(tok.encode("<AUDIO>", add_special_tokens=False)) > 1
    added = tok.get_added_vocab()
    assert {"<|endoftext|>", "<|im_start|>", "<|im_end|>", "<tool_call>", "<|fim_prefix|>"} <= set(
        added
    )
    assert [t for t in added if "AUDIO" in t.upper()] == []
    assert (tok.pad_token, tok.eos_token, tok.bos_token) == ("<|endoftext|>", "<|im_end|>", None)
    end, pad = added["<|im_end|>"], added["<|endoftext|>"]
    assert (config["eos_token_id"], config["pad_token_id"]) == (end, pad)
    assert generation["eos_token_id"] == [end, pad]
    # Like Qwen2.5's template: a default system turn when none is given, ours when one is.
    user = [{"role": "user", "content": "hi"}]
    default = tok.apply_chat_template(user, tokenize=False, add_generation_prompt=True)
    assert default == (
        "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful "
        "assistant.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    )
    ours = tok.apply_chat_template(
        [{"role": "system", "content": "S"}, *user], tokenize=False, add_generation_prompt=False
    )
    assert ours == "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n"


@pytest.mark.vllm
def test_transformers_and_vllm_agree_on_next_token_logprobs(small_dir, vllm_labeler):
    """The same prompt through transformers and vLLM (CPU): top-20 next-token logprobs equal
    within 1e-4 absolute (float32 both sides)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from vllm import SamplingParams

    tok = AutoTokenizer.from_pretrained(small_dir / "llm")
    model = AutoModelForCausalLM.from_pretrained(small_dir / "llm", dtype=torch.float32).eval()
    prompts = ["The quick brown fox jumps over", "Emotion: happy, sad or angry? I think"]
    for text in prompts:
        ids = tok.encode(text, add_special_tokens=False)
        with torch.inference_mode():
            ref = model(torch.tensor([ids])).logits[0, -1].log_softmax(-1).numpy()
        out = vllm_labeler.llm.generate(
            [{"prompt_token_ids": ids}],
            SamplingParams(max_tokens=1, temperature=1.0, logprobs=20),
            use_tqdm=False,
        )[0]
        got = out.outputs[0].logprobs[0]
        top_ref = set(np.argsort(ref)[-20:].tolist())
        assert top_ref <= set(got) | {out.outputs[0].token_ids[0]}
        diffs = [abs(got[i].logprob - ref[i]) for i in top_ref]
        assert max(diffs) < 1e-4, max(diffs)
