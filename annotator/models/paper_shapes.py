"""The paper's models as shapes: their published configurations, and an offline build of a
``paper-random`` profile with those shapes and random weights.

The paper profile loads Qwen2.5-7B-Instruct, HuBERT-large, RoBERTa-base and Whisper
large-v3-turbo by name on a cluster; none of them can be downloaded here. ``paper-random`` has
the same architectures, sizes and token layouts (the ids of ``<|im_end|>``, ``<|endoftext|>``,
Whisper's language and timestamp tokens), with random weights, so every code path of the paper
profile — prompt rendering, vLLM's 152,064-row embedding table, 28-layer GQA, HuBERT-large's
1,024-d frames, 128 mel bins, CTranslate2 float16 — runs with the real tensor shapes.

    annotator models init --profile paper-random --home /models     # ~19 GB; where it runs

It also holds an untrained EmoQ bundle over those models (part ``bundle``), so the paper
configuration serves end to end: ``models.bundle: paper-random:bundle``, ``models.llm:
paper-random:llm`` and so on (``benchmarks.gpu_pipeline`` does so).

It is never built by ``make test`` or CI (their disks are small). The tests check the shapes
on PyTorch's ``meta`` device (no memory) against the published parameter counts, and the
streaming writer on a small model.

Weights are written one tensor at a time into safetensors shards (``write_random_weights``):
a 7.6 B-parameter model is never held in memory. A random Whisper emits end-of-text at random,
so the build suppresses it; the paper-random configuration caps decoding at
``models.asr.max_new_tokens`` (about what 30 s of speech holds) instead.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from annotator.models.profiles import PAPER_RANDOM, PROFILE_MANIFEST, ProfileError, file_hashes
from annotator.models.tokenizer_layouts import (
    WHISPER_EOT,
    build_qwen_tokenizer,
    build_roberta_tokenizer,
    build_whisper_tokenizer,
    whisper_languages,
)

# 2: an untrained EmoQ bundle (part ``bundle``) over the random text encoder, HuBERT and LLM.
RECIPE = 2
# The four models the paper profile loads, their published parameter counts and where the
# count comes from (model cards; counted from the released safetensors where a card rounds).
PUBLISHED = {
    "llm": ("Qwen/Qwen2.5-7B-Instruct", 7_615_616_512, "model card: 7.61 B"),
    "hubert": ("facebook/hubert-large-ll60k", 316_000_000, "HuBERT paper, Table 1: 316 M"),
    "text_encoder": ("FacebookAI/roberta-base", 124_645_632, "125 M; RobertaModel with pooler"),
    "whisper": ("openai/whisper-large-v3-turbo", 808_878_080, "model card: 809 M"),
}
# What ``--parts`` may name: the four models, and an untrained EmoQ bundle over three of them
# (built after them). Model names in a configuration: ``paper-random:<folder>``.
PARTS = ("text_encoder", "hubert", "whisper", "llm", "bundle")


def qwen25_7b_config():
    from transformers import Qwen2Config

    return Qwen2Config(
        vocab_size=152_064,
        hidden_size=3584,
        intermediate_size=18_944,
        num_hidden_layers=28,
        num_attention_heads=28,
        num_key_value_heads=4,
        max_position_embeddings=32_768,
        max_window_layers=28,
        rms_norm_eps=1e-6,
        rope_theta=1_000_000.0,
        sliding_window=131_072,
        use_sliding_window=False,
        tie_word_embeddings=False,
        bos_token_id=151_643,
        eos_token_id=151_645,
        pad_token_id=151_643,
        hidden_act="silu",
        initializer_range=0.02,
        dtype="bfloat16",
    )


def hubert_large_config():
    from transformers import HubertConfig

    return HubertConfig(
        hidden_size=1024,
        num_hidden_layers=24,
        num_attention_heads=16,
        intermediate_size=4096,
        conv_dim=(512,) * 7,
        conv_stride=(5, 2, 2, 2, 2, 2, 2),
        conv_kernel=(10, 3, 3, 3, 3, 2, 2),
        conv_bias=True,
        feat_extract_norm="layer",
        do_stable_layer_norm=True,
        num_conv_pos_embeddings=128,
        num_conv_pos_embedding_groups=16,
        vocab_size=32,
    )


def roberta_base_config():
    from transformers import RobertaConfig

    return RobertaConfig(
        vocab_size=50_265,
        hidden_size=768,
        num_hidden_layers=12,
        num_attention_heads=12,
        intermediate_size=3072,
        max_position_embeddings=514,
        type_vocab_size=1,
        layer_norm_eps=1e-5,
        bos_token_id=0,
        pad_token_id=1,
        eos_token_id=2,
    )


def whisper_large_v3_turbo_config():
    from transformers import WhisperConfig

    return WhisperConfig(
        vocab_size=51_866,
        num_mel_bins=128,
        d_model=1280,
        encoder_layers=32,
        encoder_attention_heads=20,
        encoder_ffn_dim=5120,
        decoder_layers=4,
        decoder_attention_heads=20,
        decoder_ffn_dim=5120,
        max_source_positions=1500,
        max_target_positions=448,
        pad_token_id=WHISPER_EOT,
        bos_token_id=WHISPER_EOT,
        eos_token_id=WHISPER_EOT,
        decoder_start_token_id=WHISPER_EOT + 1,
        begin_suppress_tokens=[220, WHISPER_EOT],
    )


def paper_configs() -> dict[str, Any]:
    """The paper models' transformers configurations, by part: llm, hubert, text_encoder, whisper."""
    return {
        "llm": qwen25_7b_config(),
        "hubert": hubert_large_config(),
        "text_encoder": roberta_base_config(),
        "whisper": whisper_large_v3_turbo_config(),
    }


def model_class(part: str):
    """The transformers class each part is loaded as (the one whose parameters are counted)."""
    import transformers

    return {
        "llm": transformers.Qwen2ForCausalLM,
        "hubert": transformers.HubertModel,
        "text_encoder": transformers.RobertaModel,
        "whisper": transformers.WhisperForConditionalGeneration,
    }[part]


def on_meta(cls, config):
    """``cls(config)`` on PyTorch's meta device: every shape, no memory."""
    import torch

    with torch.device("meta"):
        return cls(config)


def parameter_count(part: str, config=None) -> int:
    """Parameters of a part with the paper's shapes (tied weights counted once)."""
    model = on_meta(model_class(part), config or paper_configs()[part])
    return sum(p.numel() for p in model.parameters())


def _init(name: str, shape: tuple[int, ...], generator, std: float, dtype):
    """A tensor initialised as transformers would: norms 1, biases 0, the rest N(0, std)."""
    import torch

    leaf = name.rsplit(".", 1)[-1]
    if leaf == "bias":
        return torch.zeros(shape, dtype=dtype)
    if "norm" in name.lower() and leaf == "weight":
        return torch.ones(shape, dtype=dtype)
    out = torch.empty(shape, dtype=torch.float32)
    out.normal_(0.0, std, generator=generator)
    return out.to(dtype)


def write_random_weights(
    cls,
    config,
    dst: Path,
    seed: int = 0,
    dtype: str = "float32",
    max_shard_bytes: int = 2 * 1024**3,
) -> int:
    """Write ``cls(config)`` with random weights to ``dst`` as transformers would save it
    (config.json, safetensors shards, and an index when there are several), one tensor at a time:
    peak memory is one shard, never the model. Returns the number of values written (parameters
    and persistent buffers)."""
    import torch
    from safetensors.torch import save_file

    model = on_meta(cls, config)
    dst.mkdir(parents=True, exist_ok=True)
    config.dtype = dtype
    config.architectures = [cls.__name__]
    config.save_pretrained(dst)
    torch_dtype = getattr(torch, dtype)
    std = float(getattr(config, "initializer_range", 0.02))
    generator = torch.Generator().manual_seed(seed)
    # The names transformers saves: tied weights once, buffers that are persistent included.
    state = model.state_dict()
    tied = getattr(config, "tie_word_embeddings", False)
    ignore = set(getattr(model, "_tied_weights_keys", None) or []) if tied else set()
    names = [n for n in state if n not in ignore]
    element = torch.empty((), dtype=torch_dtype).element_size()
    shards: list[list[str]] = [[]]
    size = 0
    for name in names:
        nbytes = state[name].numel() * element
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(name)
        size += nbytes
    weight_map: dict[str, str] = {}
    total = 0
    for k, shard in enumerate(shards, 1):
        file = (
            "model.safetensors"
            if len(shards) == 1
            else f"model-{k:05d}-of-{len(shards):05d}.safetensors"
        )
        tensors = {}
        for name in shard:
            meta = state[name]
            dt = torch_dtype if meta.is_floating_point() else meta.dtype
            if meta.is_floating_point():
                tensors[name] = _init(name, tuple(meta.shape), generator, std, dt)
            else:  # integer buffers (position ids): as the model builds them
                tensors[name] = torch.arange(meta.numel(), dtype=dt).reshape(meta.shape)
            total += meta.numel()
            weight_map[name] = file
        save_file(tensors, str(dst / file), metadata={"format": "pt"})
        del tensors
    if len(shards) > 1:
        index = {
            "metadata": {"total_size": sum(state[n].numel() * element for n in names)},
            "weight_map": weight_map,
        }
        (dst / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    return total


def build_random_whisper(
    dst: Path,
    small_whisper: Path,
    config=None,
    seed: int = 0,
    quantization: str = "float16",
) -> None:
    """A random multilingual Whisper (large-v3-turbo's shapes unless ``config`` is given) with
    large-v3's tokens, converted to CTranslate2 as faster-whisper loads it.

    End-of-text is suppressed, as a random decoder would stop at a random step: decoding runs to
    ``models.asr.max_new_tokens``. Alignment heads: half of the last decoder layer's."""
    import ctranslate2
    from transformers import GenerationConfig, WhisperFeatureExtractor

    config = config or whisper_large_v3_turbo_config()
    languages = whisper_languages(small_whisper)
    with tempfile.TemporaryDirectory(prefix=".whisper-hf-", dir=dst.parent) as scratch:
        hf = Path(scratch)
        dtype = "float16" if quantization == "float16" else "float32"
        write_random_weights(model_class("whisper"), config, hf, seed=seed, dtype=dtype)
        build_whisper_tokenizer(hf, small_whisper)
        WhisperFeatureExtractor(feature_size=config.num_mel_bins).save_pretrained(hf)
        last = config.decoder_layers - 1
        GenerationConfig(
            decoder_start_token_id=WHISPER_EOT + 1,
            eos_token_id=WHISPER_EOT,
            pad_token_id=WHISPER_EOT,
            suppress_tokens=[WHISPER_EOT],
            begin_suppress_tokens=[220, WHISPER_EOT],
            lang_to_id={f"<|{c}|>": WHISPER_EOT + 2 + k for k, c in enumerate(languages)},
            alignment_heads=[[last, h] for h in range(0, config.decoder_attention_heads, 2)],
            no_timestamps_token_id=WHISPER_EOT + 2 + len(languages) + 5,
            max_length=config.max_target_positions,
        ).save_pretrained(hf)
        ctranslate2.converters.TransformersConverter(
            str(hf),
            copy_files=["tokenizer.json", "preprocessor_config.json"],
            load_as_float16=dtype == "float16",
        ).convert(str(dst), quantization=quantization, force=True)


def part_folder(part: str) -> str:
    """The folder a part is built in, and the name after ``paper-random:`` in a configuration."""
    return part.replace("_", "-")


def paper_random_dir(home: Path) -> Path:
    return Path(home) / PAPER_RANDOM


def build_paper_random_profile(
    home: Path,
    small_whisper: Path,
    seed: int = 0,
    parts: tuple[str, ...] = PARTS,
    on_step: Callable[[str], None] = lambda step: None,
) -> Path:
    """Build ``paper-random`` under ``home/paper-random``: the parts named, each in a staging
    folder renamed into place, then a manifest of every file's SHA-256.

    ``small_whisper``: the small profile's Whisper folder, whose BPE the tokenizers are made of.
    """
    from transformers import AutoFeatureExtractor, GenerationConfig

    target = paper_random_dir(home)
    target.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(target).free
    need = {"text_encoder": 0.6, "hubert": 1.4, "whisper": 5.0, "llm": 15.5, "bundle": 0.8}
    gb = sum(need[p] for p in parts)
    if free < gb * 1024**3:
        raise ProfileError(
            f"{target} has {free / 1024**3:.1f} GB free; building {', '.join(parts)} needs "
            f"~{gb:.0f} GB (15.2 GB of it for the LLM)"
        )
    for part in sorted(parts, key=PARTS.index):
        if part in PUBLISHED:
            on_step(f"{part}: {PUBLISHED[part][0]} shapes, random weights")
        else:
            on_step(f"{part}: an untrained EmoQ bundle over the random models")
        staging = Path(tempfile.mkdtemp(prefix=f".{part}-", dir=target))
        try:
            folder = part_folder(part)
            if part == "bundle":
                build_random_bundle(target, staging / folder, seed)
            elif part == "whisper":
                build_random_whisper(staging / folder, small_whisper, seed=seed)
            else:
                cfg = paper_configs()[part]
                dtype = "bfloat16" if part == "llm" else "float32"
                write_random_weights(model_class(part), cfg, staging / folder, seed, dtype)
                if part == "llm":
                    build_qwen_tokenizer(staging / folder, small_whisper)
                    GenerationConfig(
                        eos_token_id=[151_645, 151_643], pad_token_id=151_643
                    ).save_pretrained(staging / folder)
                elif part == "text_encoder":
                    build_roberta_tokenizer(staging / folder, small_whisper)
                else:
                    AutoFeatureExtractor.from_pretrained(
                        small_whisper.parent / "hubert"
                    ).save_pretrained(staging / folder)
            if (target / folder).exists():
                shutil.rmtree(target / folder)
            (staging / folder).rename(target / folder)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    manifest = {
        "profile": PAPER_RANDOM,
        "recipe": RECIPE,
        "seed": seed,
        "files": file_hashes(target),
    }
    (target / PROFILE_MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True))
    return target


def build_random_bundle(target: Path, dst: Path, seed: int = 0) -> None:
    """An untrained EmoQ bundle over ``target``'s models, named ``paper-random:<folder>``: an
    EmoQ-Former initialised from the random RoBERTa-base over HuBERT-large's 1,024-d frames, a
    projector to Qwen2.5-7B's 3,584 dimensions and a zero LoRA made from the LLM's config (the
    7B model is never loaded)."""
    from annotator.kinds.emoq.untrained import build_untrained_bundle

    folders = {part: part_folder(part) for part in ("text_encoder", "hubert", "llm")}
    missing = [part for part, folder in folders.items() if not (target / folder).is_dir()]
    if missing:
        raise ProfileError(
            f"the bundle is built over {', '.join(missing)}, not built under {target}: name "
            f"{','.join(missing)},bundle in --parts"
        )
    build_untrained_bundle(
        dst,
        target / "text-encoder",
        target / "hubert",
        target / "llm",
        {part: f"{PAPER_RANDOM}:{folder}" for part, folder in folders.items()},
        seed=seed,
        lora_from_config=True,
    )


def parameter_table() -> list[dict[str, Any]]:
    """Per part: the paper-random parameter count beside the published one."""
    rows = []
    for part, (name, published, source) in PUBLISHED.items():
        ours = parameter_count(part)
        rows.append(
            {
                "part": part,
                "model": name,
                "paper_random": ours,
                "published": published,
                "source": source,
                "ratio": round(ours / published, 4),
                "bf16_gb": round(ours * 2 / 1e9, 2),
            }
        )
    return rows


def format_parameter_table(rows: list[dict[str, Any]]) -> str:
    lines = [f"{'part':<13}{'model':<32}{'paper-random':>15}{'published':>15}{'ratio':>8}"]
    for r in rows:
        lines.append(
            f"{r['part']:<13}{r['model']:<32}{r['paper_random']:>15,}{r['published']:>15,}"
            f"{r['ratio']:>8.4f}"
        )
    return "\n".join(lines)
