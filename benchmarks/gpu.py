"""Per-stage GPU figures with the paper's model shapes: ASR, features, label and one step of each
training stage, each on its own, with random weights built directly on the device.

    python -m benchmarks.gpu [--shapes paper|small] [--device cuda|cpu]
                             [--stages asr,features,label,train1,train2] [--asr-model DIR]
    make bench-gpu                        # the same through the project's venv

It runs on a bare GPU machine: Python + PyTorch with CUDA + transformers + PEFT + pyarrow +
safetensors, nothing else (no Ray, vLLM, faster-whisper, CTranslate2, pydantic), and no model
files. There, from the repository root, without installing anything::

    python -m benchmarks.gpu                              # JSON in benchmarks/results/gpu.json

``--shapes paper`` (default) builds Qwen2.5-7B-Instruct, HuBERT-large, an EmoQ-Former of
RoBERTa-base's size and Whisper large-v3-turbo from ``annotator/models/paper_shapes.py`` with
random weights, initialised on the device in the stage's dtype (no CPU copy, no fp32 copy of a
bf16 model). ``--shapes small`` keeps the same code path, vocabularies and token layouts with the
small profile's widths and depths, and a smaller workload: a CPU smoke run of seconds, written to
``gpu-small-cpu.json`` so that it never overwrites GPU figures.

Per stage, after one warm-up iteration (``torch.cuda.synchronize`` around the timed ones):

* asr: a batch of 30 s windows (128 mel bins × 3000 frames; feature extraction not timed),
  encoder + beam decoding of ``asr_new_tokens`` tokens with end-of-text suppressed (a random
  decoder would stop anywhere). CTranslate2, as the pipeline's faster-whisper runs it, when it
  imports and a converted model loads (``--asr-model``, default the ``paper-random`` / ``small``
  profile's ``whisper`` folder under ANNOTATOR_HOME); otherwise transformers'
  ``WhisperForConditionalGeneration``, and the result says which ran and why.
* features: HuBERT over a batch of segments (raw waveforms; the extractor's normalisation not
  timed), then the project's ``EmoQFormer`` and ``Projector`` (the pipeline's ``EmotionEmbedder``
  computation). Run at the typical segment length and at the longest (``audio.max_segment_s``,
  30 s), which sets the plan's memory.
* label: the reference labeler's computation (``annotator/models/labeler/reference.py``) on the
  device: right-padded prompt embeddings with the soft token in its slot (as
  ``PromptEmbedder.embed`` places it), base LLM + LoRA forward, last-position logits, softmax
  over the emotion tokens; then the same prompts as they are served, the template's first
  ``template_tokens`` (the same in every prompt) computed once and their keys and values reused
  (vLLM's prefix cache, here through transformers' cache: the bare machine has no vLLM), with the
  two posteriors' largest difference. No tokenizer exists on the bare machine, so prompts are
  random token ids of realistic lengths behind a shared random template.
* train1 / train2: one optimizer step of each training stage at the paper's global batch of 8 on
  one device: stage 1 (EmoQ-Former + head, MAL, AdamW over precomputed HuBERT frames), stage 2
  (bf16 base LLM frozen, fp32 EmoQ-Former + projector + LoRA, the Eq. 7 loss, AdamW).

With paper shapes, ASR, features and label run again at larger batches (``MORE_BATCHES``: rows
``asr@64``, ``features@128``, ``label@256``), and ``chain`` sums, per stage, its lowest GPU
seconds per audio hour into the ceiling RTFx of one GPU running the chain, with the emotion
stages' share against ASR's (the goal is ≤ 0.25) and which ASR implementation ran.

Each stage reports seconds per iteration, RTFx (audio seconds / stage seconds) where audio is
involved, peak memory (``torch.cuda.max_memory_allocated``, reset per stage; peak RSS on CPU),
and whether every parameter, buffer and input was on the target device (on CUDA a stray one
fails the stage). Models are freed between stages. The plan's GPU memory per stage from
``cluster/paper.yaml`` is printed beside the measured figures.

This is the per-stage layer of the GPU benchmarks. The other layer, the whole Ray + vLLM
pipeline on a GPU node with the paper configuration over the paper-random profile, is
``benchmarks.gpu_pipeline``.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib.util
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch

from annotator.kinds.emoq.emoq_former import EmoQFormer, EmoQFormerConfig
from annotator.kinds.emoq.projector import Projector
from annotator.kinds.emoq.train_models import Stage1Model, Stage2Model
from annotator.models.labeler.reference import right_padded
from annotator.models.paper_shapes import (
    model_class,
    paper_configs,
)
from annotator.models.profiles import SmallSizes
from annotator.models.prompt import Prompt
from annotator.models.tokenizer_layouts import QWEN_BASE_VOCAB, WHISPER_EOT
from benchmarks.common import peak_rss_mib, write_result
from training import losses
from training.llm import batch_loss, pad_answers

STAGES = ("asr", "features", "label", "train1", "train2")
SAMPLE_RATE = 16_000
WINDOW_S = 30.0
# Whisper large-v3's decoder prompt <|startoftranscript|><|en|><|transcribe|><|notimestamps|>:
# 100 language tokens follow <|startoftranscript|>, then six task tokens (paper_shapes' layout).
WHISPER_PROMPT = (WHISPER_EOT + 1, WHISPER_EOT + 2, WHISPER_EOT + 103, WHISPER_EOT + 107)
# Qwen2.5's <|im_end|> (ends the stage-2 answer) and <|endoftext|> (its pad).
IM_END, QWEN_PAD = 151_645, 151_643
# Tokens of the EmoQ prompt after the soft slot: "<|im_end|>\n<|im_start|>assistant\nEmotion:".
AFTER_SLOT = 9
# The paper's training configuration (annotator/config.py, TrainConfig defaults).
NUM_QUERIES, LORA_RANK, LORA_DROPOUT = 16, 8, 0.1
LR_STAGE1, LR_STAGE2 = 2e-4, 3e-3
TEMPERATURE, GAMMA, MAL_LAMBDA, EMOTION_TOKEN_WEIGHT = 0.07, 2.0, 1.0, 5.0
LABELS = ("neutral", "angry", "sad", "happy")  # iemocap4, the default label set
# GPU memory per actor that cluster/paper.yaml plans on an 80 GB GPU (its comments: "Per GPU");
# training is not in that plan.
PLANNED_GPU_GB = {
    "asr": (6.0, "Whisper large-v3-turbo fp16 1.6 GB + ~4 GB beam-5 decoding of batch 16"),
    "features": (4.0, "HuBERT-large + EmoQ-Former + projector ~1.1 GB fp16 + ~3 GB (32 × 30 s)"),
    "label": (28.0, "vLLM: 0.35 × 80 GB = 15.2 GB bf16 weights + ~11 GB KV cache"),
}


@dataclass(frozen=True)
class Workload:
    """What each stage is given per iteration.

    Attributes:
        asr_windows / asr_beam / asr_new_tokens: 30 s windows per ASR batch (the paper's
            ``stages.asr.batch_size``), beam width, tokens decoded per window (~100 is what 30 s
            of speech holds).
        segments / segment_s / transcript_tokens: the features batch (``stages.features``), the
            segment lengths it runs at (typical, then the longest), text tokens per transcript.
        label_batch / prompt_tokens: prompts per forward pass and their mean length.
        template_tokens: how many of them every prompt shares (the system prompt and chat
            markup before the transcript: 47 with the small profile's tokenizer,
            ``benchmarks/results/labeler.json``).
        train_batch: the global batch of a training step (the paper's 8).
        iterations: timed iterations per stage, after one warm-up.
    """

    asr_windows: int
    asr_beam: int
    asr_new_tokens: int
    segments: int
    segment_s: tuple[float, ...]
    transcript_tokens: int
    label_batch: int
    prompt_tokens: int
    template_tokens: int
    train_batch: int
    iterations: int


PAPER = Workload(16, 5, 100, 32, (6.0, 30.0), 32, 64, 100, 47, 8, 3)
SMOKE = Workload(2, 2, 8, 4, (2.0,), 16, 8, 100, 47, 8, 1)


class OffDevice(RuntimeError):
    """A parameter, buffer or input of a stage is not on the device the stage runs on."""


# -- shapes ----------------------------------------------------------------------------------


def _resized(config, **sizes):
    """``config`` with other widths and depths; the fields derived from them are derived again."""
    fields = config.to_dict()
    for derived in ("layer_types", "num_feat_extract_layers", "head_dim"):
        fields.pop(derived, None)
    return type(config).from_dict({**fields, **sizes})


def small_configs() -> dict[str, Any]:
    """The paper configurations at the small profile's widths and depths (``SmallSizes``):
    vocabularies, token ids, mel bins, conv strides and position layouts stay the paper's."""
    s = SmallSizes()
    paper = paper_configs()
    return {
        "llm": _resized(
            paper["llm"],
            hidden_size=s.llm_hidden,
            num_hidden_layers=s.llm_layers,
            max_window_layers=s.llm_layers,
            num_attention_heads=s.llm_heads,
            num_key_value_heads=s.llm_kv_heads,
            intermediate_size=s.llm_intermediate,
        ),
        "hubert": _resized(
            paper["hubert"],
            hidden_size=s.hubert_hidden,
            num_hidden_layers=s.hubert_layers,
            num_attention_heads=s.hubert_heads,
            intermediate_size=4 * s.hubert_hidden,
            conv_dim=[s.hubert_conv] * 7,
            num_conv_pos_embeddings=16,
            num_conv_pos_embedding_groups=4,
        ),
        "text_encoder": _resized(
            paper["text_encoder"],
            hidden_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=256,
        ),
        "whisper": _resized(
            paper["whisper"],
            d_model=64,
            encoder_layers=2,
            decoder_layers=2,
            encoder_attention_heads=4,
            decoder_attention_heads=4,
            encoder_ffn_dim=256,
            decoder_ffn_dim=256,
        ),
    }


def former_config(text, audio_dim: int) -> EmoQFormerConfig:
    """The EmoQ-Former that a text encoder of configuration ``text`` starts, as
    ``EmoQFormer.from_pretrained`` derives it (which then loads the encoder's weights)."""
    return EmoQFormerConfig.from_text_encoder(text, audio_dim, num_queries=NUM_QUERIES)


def hubert_frames(config, samples: int) -> int:
    """Frames HuBERT's convolutions make of ``samples`` samples (50 per second)."""
    for kernel, stride in zip(config.conv_kernel, config.conv_stride, strict=True):
        samples = (samples - kernel) // stride + 1
    return samples


# -- measuring -------------------------------------------------------------------------------


@contextlib.contextmanager
def built_on(device: str, dtype: torch.dtype) -> Iterator[None]:
    """Modules created inside get their parameters on ``device`` in ``dtype``, initialised there."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            yield
    finally:
        torch.set_default_dtype(previous)


def _on(tensor: torch.Tensor, device: torch.device) -> bool:
    return tensor.device.type == device.type and (
        device.index is None or tensor.device.index == device.index
    )


def check_on_device(device: str, modules: dict[str, Any], inputs: dict[str, Any]) -> bool:
    """True when every parameter, buffer and input tensor is on ``device``; on CUDA a stray one
    raises :class:`OffDevice` (it would be a silent host round trip in the pipeline)."""
    target = torch.device(device)
    stray = [
        f"{name}.{key} ({tensor.device})"
        for name, module in modules.items()
        for key, tensor in [*module.named_parameters(), *module.named_buffers()]
        if not _on(tensor, target)
    ]
    stray += [
        f"input {key} ({tensor.device})"
        for key, tensor in inputs.items()
        if isinstance(tensor, torch.Tensor) and not _on(tensor, target)
    ]
    if stray and target.type == "cuda":
        raise OffDevice(f"not on {device}: {', '.join(stray[:10])}")
    return not stray


def parameters(*modules) -> int:
    return sum(p.numel() for m in modules for p in m.parameters())


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(step: Callable[[], Any], device: str, iterations: int) -> tuple[float, Any]:
    """(seconds per iteration, last result) over ``iterations`` runs after one warm-up."""
    step()
    sync(device)
    start = time.perf_counter()
    for _ in range(iterations):
        out = step()
    sync(device)
    return (time.perf_counter() - start) / iterations, out


def memory(device: str) -> dict[str, float]:
    """Peak memory since the stage began: PyTorch's allocations on CUDA, the process on CPU."""
    if device.startswith("cuda"):
        return {
            "peak_gpu_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2),
            "peak_gpu_reserved_gib": round(torch.cuda.max_memory_reserved() / 2**30, 2),
        }
    return {"peak_rss_mib_so_far": round(peak_rss_mib(), 1)}


def release(device: str) -> None:
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()


# -- stages ----------------------------------------------------------------------------------


def annotator_home() -> Path:
    try:
        from annotator.config import default_home
    except ImportError:  # a bare machine has no pydantic (and no built profile either)
        return Path(os.environ.get("ANNOTATOR_HOME", "~/.cache/annotator")).expanduser()
    return default_home()


def asr_ctranslate2(model_dir: Path, device: str, work: Workload) -> dict[str, Any]:
    """The CTranslate2 Whisper that faster-whisper wraps, over the same windows and prompt.
    Raises ImportError or RuntimeError when CTranslate2 or the model is not there."""
    import ctranslate2
    from tokenizers import Tokenizer

    target = torch.device(device)
    compute = "float16" if target.type == "cuda" else "int8"
    model = ctranslate2.models.Whisper(
        str(model_dir), device=target.type, device_index=target.index or 0, compute_type=compute
    )
    vocab = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    names = ["<|startoftranscript|>", "<|en|>", "<|transcribe|>", "<|notimestamps|>"]
    if not model.is_multilingual:
        names = [names[0], names[-1]]
    prompt = [vocab.token_to_id(name) for name in names]
    eot = vocab.token_to_id("<|endoftext|>")
    windows = torch.randn(work.asr_windows, model.n_mels, int(WINDOW_S * 100), device=device)
    features = ctranslate2.StorageView.from_array(windows if windows.is_cuda else windows.numpy())

    def step():
        return model.generate(
            features,
            [prompt] * work.asr_windows,
            beam_size=work.asr_beam,
            # CTranslate2 decodes min(max_length / 2, max_length - prompt) tokens (whisper.cc;
            # OpenNMT/CTranslate2#1856): twice the tokens wanted.
            max_length=2 * work.asr_new_tokens,
            suppress_tokens=[eot],
            suppress_blank=False,
        )

    seconds, out = timed(step, device, work.iterations)
    tokens = sum(len(r.sequences_ids[0]) for r in out) / len(out)
    figures = {
        "implementation": f"ctranslate2 {ctranslate2.__version__} ({model_dir}, {compute})",
        "all_on_device": model.device == target.type,
        "tokens_per_window": tokens,
    }
    if device.startswith("cuda"):
        # CTranslate2 allocates outside PyTorch: only the device-wide figure sees it.
        free, total = torch.cuda.mem_get_info()
        figures["gpu_used_gib_device_wide"] = round((total - free) / 2**30, 2)
    return {**figures, **_asr_rates(seconds, tokens, work)}


def asr_transformers(configs, device: str, work: Workload, half: torch.dtype) -> dict[str, Any]:
    from transformers import GenerationConfig

    config = configs["whisper"]
    with built_on(device, half):
        model = model_class("whisper")(config).eval()
    frames = 2 * config.max_source_positions  # 3000: 30 s at 100 mel frames per second
    windows = torch.randn(work.asr_windows, config.num_mel_bins, frames, device=device, dtype=half)
    prompt = torch.tensor([WHISPER_PROMPT] * work.asr_windows, device=device)
    on_device = check_on_device(device, {"whisper": model}, {"windows": windows, "prompt": prompt})
    generation = GenerationConfig(
        decoder_start_token_id=WHISPER_EOT + 1,
        eos_token_id=WHISPER_EOT,
        pad_token_id=WHISPER_EOT,
        suppress_tokens=[WHISPER_EOT],
        begin_suppress_tokens=[220, WHISPER_EOT],
        max_new_tokens=work.asr_new_tokens,
        num_beams=work.asr_beam,
    )

    def step():
        with torch.inference_mode():
            return model.generate(windows, generation_config=generation, decoder_input_ids=prompt)

    seconds, out = timed(step, device, work.iterations)
    tokens = out.shape[1]  # the new tokens (Whisper's generate strips the prompt)
    return {
        "all_on_device": on_device,
        "parameters": parameters(model),
        "dtype": str(model.dtype),
        "tokens_per_window": tokens,
        **_asr_rates(seconds, tokens, work),
    }


def _asr_rates(seconds: float, tokens: float, work: Workload) -> dict[str, Any]:
    audio_s = work.asr_windows * WINDOW_S
    return {
        "windows": work.asr_windows,
        "beam": work.asr_beam,
        "audio_s": audio_s,
        "seconds": round(seconds, 4),
        "rtfx": round(audio_s / seconds, 1),
        "tokens_per_s": round(work.asr_windows * tokens / seconds, 1),
    }


def stage_asr(configs, device, work, half, asr_model: Path | None) -> dict[str, Any]:
    """CTranslate2 when it imports and the model loads, else transformers (reason recorded)."""
    if importlib.util.find_spec("ctranslate2") is None:
        reason = "CTranslate2 not installed"
    elif asr_model is None:
        reason = "no CTranslate2 model given (--asr-model)"
    elif not (asr_model / "model.bin").is_file():
        reason = f"no CTranslate2 model at {asr_model}"
    else:
        try:
            return asr_ctranslate2(asr_model, device, work)
        except (ImportError, RuntimeError, ValueError) as error:
            reason = f"CTranslate2 not loadable: {type(error).__name__}: {error}"
    figures = asr_transformers(configs, device, work, half)
    return {"implementation": f"transformers-whisper ({reason})", **figures}


def stage_features(configs, device: str, work: Workload, half: torch.dtype) -> dict[str, Any]:
    hubert_cfg, text_cfg = configs["hubert"], configs["text_encoder"]
    with built_on(device, half):
        # .to(): transformers 5.x makes HuBERT's masked_spec_embed with the legacy
        # torch.Tensor(...) constructor, which ignores the default device (OffDevice on cuda).
        hubert = model_class("hubert")(hubert_cfg).eval().to(device)
        former = EmoQFormer(former_config(text_cfg, hubert_cfg.hidden_size)).eval()
        projector = Projector(former.config.embed_dim, configs["llm"].hidden_size).eval()
    figures: dict[str, Any] = {
        "parameters": {
            "hubert": parameters(hubert),
            "emoq_former": parameters(former),
            "projector": parameters(projector),
        },
        "dtype": str(hubert.dtype),
        "segments": work.segments,
        "all_on_device": True,
    }
    n = work.segments
    for seconds_each in work.segment_s:
        samples = int(seconds_each * SAMPLE_RATE)
        inputs = {
            "waveforms": torch.randn(n, samples, device=device, dtype=half),
            "sample_mask": torch.ones(n, samples, dtype=torch.long, device=device),
            "ids": torch.randint(
                3, text_cfg.vocab_size, (n, work.transcript_tokens), device=device
            ),
            "text_mask": torch.ones(n, work.transcript_tokens, dtype=torch.bool, device=device),
        }
        modules = {"hubert": hubert, "former": former, "projector": projector}
        figures["all_on_device"] &= check_on_device(device, modules, inputs)

        def step(inputs=inputs):
            # EmotionEmbedder: HuBERT's last hidden state, its frame mask, e, the soft token.
            with torch.inference_mode():
                hidden = hubert(inputs["waveforms"], attention_mask=inputs["sample_mask"])
                hidden = hidden.last_hidden_state
                frame_mask = hubert._get_feature_vector_attention_mask(
                    hidden.shape[1], inputs["sample_mask"]
                ).bool()
                e = former(hidden, frame_mask, inputs["ids"], inputs["text_mask"])
                return projector(e)

        seconds, soft = timed(step, device, work.iterations)
        audio_s = n * seconds_each
        figures[f"segment_{seconds_each:g}s"] = {
            "audio_s": audio_s,
            "seconds": round(seconds, 4),
            "rtfx": round(audio_s / seconds, 1),
            "s_per_audio_hour": round(3600 / (audio_s / seconds), 3),
            "soft_finite": bool(torch.isfinite(soft).all()),
            **memory(device),
        }
    return figures


def _lora(llm):
    from peft import get_peft_model

    from annotator.models.lora import lora_config

    return get_peft_model(
        llm, lora_config(LORA_RANK, dropout=LORA_DROPOUT), autocast_adapter_dtype=True
    )


def random_prompts(
    n: int, mean: int, generator: torch.Generator, template: int = 0
) -> list[Prompt]:
    """EmoQ prompts of ``mean`` ± 20 random tokens, the soft slot where the template puts it; the
    first ``template`` tokens the same in every prompt (the system prompt and chat markup)."""
    lengths = torch.randint(mean - 20, mean + 21, (n,), generator=generator).tolist()
    shared = torch.randint(0, QWEN_BASE_VOCAB, (template,), generator=generator).tolist()
    return [
        Prompt(
            tuple(
                shared
                + torch.randint(
                    0, QWEN_BASE_VOCAB, (length - template,), generator=generator
                ).tolist()
            ),
            audio_position=length - AFTER_SLOT - 1,
        )
        for length in lengths
    ]


def embed(table: torch.Tensor, prompt: Prompt, soft: torch.Tensor) -> torch.Tensor:
    """``PromptEmbedder.embed`` with the LLM's own table (the slot's row becomes ``soft``)."""
    rows = table[torch.as_tensor(prompt.ids, device=table.device)].clone()
    rows[prompt.audio_position] = soft.to(rows.dtype)
    return rows


def _last_logits(model, embeds, mask, lengths, emotion_ids, past=None):
    """The emotion posteriors at each prompt's last real position (right-padded ``embeds``)."""
    logits = model(inputs_embeds=embeds, attention_mask=mask, past_key_values=past).logits
    last = logits[torch.arange(len(lengths), device=embeds.device), lengths - 1].float()
    return last[:, emotion_ids].softmax(dim=-1)


def stage_label(configs, device: str, work: Workload, dtype: torch.dtype) -> dict[str, Any]:
    """The label stage twice on the same prompts: every prompt prefilled whole (the reference
    labeler), and as it is served, the shared template's keys and values computed once and
    reused by every prompt (what vLLM's prefix cache does; here with transformers' cache, as
    the bare machine has no vLLM). The two posteriors must agree."""
    import copy

    llm_cfg = configs["llm"]
    with built_on(device, dtype):
        llm = model_class("llm")(llm_cfg)
    model = _lora(llm).eval()
    generator = torch.Generator().manual_seed(0)
    prompts = random_prompts(
        work.label_batch, work.prompt_tokens, generator, template=work.template_tokens
    )
    soft = torch.randn(work.label_batch, llm_cfg.hidden_size, device=device) * 0.02
    table = model.get_input_embeddings().weight
    emotion_ids = torch.arange(len(LABELS), device=device) + 1000  # any distinct vocabulary ids
    with torch.inference_mode():  # the prompt embeddings the labeler is handed
        rows = [embed(table, p, soft[i]) for i, p in enumerate(prompts)]
    lengths = torch.tensor([len(r) for r in rows], device=device)
    on_device = check_on_device(
        device, {"llm": model}, {"emotion_ids": emotion_ids, "lengths": lengths, "row 0": rows[0]}
    )
    t = work.template_tokens
    with torch.inference_mode():  # computed once for the run, as the engine's cache keeps it
        template = model(inputs_embeds=rows[0][None, :t], use_cache=True).past_key_values

    def whole():
        # ReferenceLabeler.posteriors on the device: right-padded, causal, last real position.
        with torch.inference_mode():
            batch, mask, n = right_padded(rows, dtype, device)
            return _last_logits(model, batch, mask, n, emotion_ids)

    def reused():
        # Only the part after the template is prefilled, over the template's cached keys/values.
        with torch.inference_mode():
            past = copy.deepcopy(template)
            past.batch_repeat_interleave(len(rows))
            batch, mask, n = right_padded([r[t:] for r in rows], dtype, device)
            mask = torch.cat([mask.new_ones(len(rows), t), mask], dim=1)
            return _last_logits(model, batch, mask, n, emotion_ids, past)

    seconds, posteriors = timed(whole, device, work.iterations)
    served_s, served = timed(reused, device, work.iterations)
    lora = next(p for n, p in model.named_parameters() if "lora_A" in n)

    def rates(seconds: float) -> dict[str, Any]:
        per_s = work.label_batch / seconds
        return {
            "seconds": round(seconds, 4),
            "prompts_per_s": round(per_s, 1),
            # One prompt per speech segment: an hour of segments of the typical length.
            "s_per_audio_hour": round(3600 / work.segment_s[0] / per_s, 3),
        }

    return {
        "parameters": parameters(model),
        "dtype": str(llm.dtype),
        "lora_dtype": str(lora.dtype),
        "prompts": work.label_batch,
        "mean_prompt_tokens": round(float(lengths.float().mean()), 1),
        "template_tokens": t,
        **rates(served_s),  # the stage as served: the template reused
        "whole_prompts": {
            **rates(seconds),
            "tokens_per_s": round(float(lengths.sum()) / seconds, 1),
        },
        "template_reused_over_whole": round(seconds / served_s, 3),
        "max_abs_posterior_diff": float((served - posteriors).abs().max()),
        "posteriors_sum_to_1": bool(torch.allclose(posteriors.sum(-1), posteriors.new_ones(1))),
        "all_on_device": on_device,
    }


def _speech_batch(configs, device: str, work: Workload) -> dict[str, torch.Tensor]:
    """Precomputed HuBERT frames (fp32, as ``pad_frames`` makes them) and transcript tokens."""
    n, hubert_cfg = work.train_batch, configs["hubert"]
    frames = hubert_frames(hubert_cfg, int(work.segment_s[0] * SAMPLE_RATE))
    return {
        "frames": torch.randn(n, frames, hubert_cfg.hidden_size, device=device),
        "frame_mask": torch.ones(n, frames, dtype=torch.bool, device=device),
        "ids": torch.randint(
            3, configs["text_encoder"].vocab_size, (n, work.transcript_tokens), device=device
        ),
        "text_mask": torch.ones(n, work.transcript_tokens, dtype=torch.bool, device=device),
    }


def _step(model, optimizer, loss_of: Callable[[], torch.Tensor]) -> Callable[[], torch.Tensor]:
    def step():
        loss = loss_of()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return loss.detach()

    return step


def stage_train1(configs, device: str, work: Workload) -> dict[str, Any]:
    with built_on(device, torch.float32):
        former = EmoQFormer(former_config(configs["text_encoder"], configs["hubert"].hidden_size))
        model = Stage1Model(former, len(LABELS)).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR_STAGE1)
    batch = _speech_batch(configs, device, work)
    labels = torch.arange(work.train_batch, device=device) % len(LABELS)  # positives for SupCon
    weights = losses.class_weights(labels.tolist(), len(LABELS)).to(device)
    inputs = {**batch, "labels": labels, "weights": weights}
    on_device = check_on_device(device, {"model": model}, inputs)

    def loss_of():
        e, logits = model(batch["frames"], batch["frame_mask"], batch["ids"], batch["text_mask"])
        return losses.mal(e, logits, labels, TEMPERATURE, GAMMA, MAL_LAMBDA, weights)

    seconds, loss = timed(_step(model, optimizer, loss_of), device, work.iterations)
    return {
        "trainable_parameters": parameters(model),
        "dtype": "torch.float32",
        "batch": work.train_batch,
        "frames_per_example": batch["frames"].shape[1],
        "seconds_per_step": round(seconds, 4),
        "loss_finite": bool(torch.isfinite(loss)),
        "all_on_device": on_device,
    }


def _answer_batch(device: str, work: Workload, generator) -> dict[str, torch.Tensor]:
    """``annotator.kinds.emoq.stage2.sequences`` without a tokenizer: prompt, one emotion-word token and
    <|im_end|>, right-padded, with the Eq. 7 weights and each soft slot's position."""
    rows, weights, positions = [], [], []
    for k, prompt in enumerate(random_prompts(work.train_batch, work.prompt_tokens, generator)):
        word = 1000 + k % len(LABELS)
        rows.append([*prompt.ids, word, IM_END])
        weights.append([0.0] * len(prompt) + [EMOTION_TOKEN_WEIGHT, 1.0])
        positions.append(prompt.audio_position)
    ids, mask, w = pad_answers(rows, weights, QWEN_PAD)
    batch = {"prompt_ids": ids, "prompt_mask": mask, "weights": w}
    batch["audio_position"] = torch.tensor(positions)
    return {key: value.to(device) for key, value in batch.items()}


def stage_train2(configs, device: str, work: Workload, dtype: torch.dtype) -> dict[str, Any]:
    llm_cfg = configs["llm"]
    with built_on(device, dtype):
        llm = model_class("llm")(llm_cfg)
    with built_on(device, torch.float32):
        former = EmoQFormer(former_config(configs["text_encoder"], configs["hubert"].hidden_size))
        projector = Projector(former.config.embed_dim, llm_cfg.hidden_size)
    model = Stage2Model(former, projector, _lora(llm)).train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    in_former = {id(p) for p in model.former.parameters()}
    optimizer = torch.optim.AdamW(
        [
            {"params": [p for p in trainable if id(p) in in_former], "lr": LR_STAGE1},
            {"params": [p for p in trainable if id(p) not in in_former], "lr": LR_STAGE2},
        ]
    )
    generator = torch.Generator().manual_seed(1)
    batch = {**_speech_batch(configs, device, work), **_answer_batch(device, work, generator)}
    on_device = check_on_device(device, {"model": model}, batch)
    seconds, loss = timed(
        _step(model, optimizer, lambda: batch_loss(model, batch)), device, work.iterations
    )
    return {
        "parameters": parameters(model),
        "trainable_parameters": sum(p.numel() for p in trainable),
        "llm_dtype": str(llm.dtype),
        "trainable_dtypes": sorted({str(p.dtype) for p in trainable}),
        "batch": work.train_batch,
        "sequence_tokens": batch["prompt_ids"].shape[1],
        "seconds_per_step": round(seconds, 4),
        "loss_finite": bool(torch.isfinite(loss)),
        "all_on_device": on_device,
    }


# -- the run ---------------------------------------------------------------------------------


def run_stage(name: str, device: str, call: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """One stage with its own peak-memory window; its models are freed before the next."""
    release(device)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    try:
        figures = call()
    except Exception as error:  # one failed stage must not lose the others' figures
        figures = {"error": f"{type(error).__name__}: {error}"}
    figures = {**figures, **memory(device), "stage_wall_s": round(time.perf_counter() - start, 1)}
    if name in PLANNED_GPU_GB:
        figures["planned_gpu_gb"] = PLANNED_GPU_GB[name][0]
    release(device)
    if device.startswith("cuda"):
        figures["left_allocated_gib"] = round(torch.cuda.memory_allocated() / 2**30, 3)
    print(f"{name}: {json.dumps(figures)}", file=sys.stderr, flush=True)
    return figures


# Larger batches each stage also runs at (paper shapes): the field of Workload they set.
MORE_BATCHES = {
    "asr": ("asr_windows", (64,)),
    "features": ("segments", (128,)),
    "label": ("label_batch", (256,)),
}


def chain(stages: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The chain on one GPU: per stage its lowest GPU seconds per audio hour over the batches it
    ran at (``name`` or ``name@batch``), their sum, and the ceiling RTFx of a GPU that runs
    them all; the emotion stages (features + label, as served) against ASR."""

    def rows(name):
        return [f for k, f in stages.items() if k.split("@")[0] == name and "error" not in f]

    def per_hour(name, of):
        found = [of(f) for f in rows(name)]
        return min(found) if found else None

    asr = per_hour("asr", lambda f: 3600 / f["rtfx"])
    features = per_hour(  # at the typical segment length, the first it ran at
        "features",
        lambda f: next(v for k, v in f.items() if k.startswith("segment_"))["s_per_audio_hour"],
    )
    label = per_hour("label", lambda f: f["s_per_audio_hour"])
    whole = per_hour("label", lambda f: f["whole_prompts"]["s_per_audio_hour"])
    if None in (asr, features, label):
        return {
            "missing": [
                n for n, v in (("asr", asr), ("features", features), ("label", label)) if v is None
            ]
        }
    total = asr + features + label
    return {
        "asr_implementation": rows("asr")[0].get("implementation", ""),
        "asr_s_per_audio_hour": round(asr, 3),
        "features_s_per_audio_hour": round(features, 3),
        "label_s_per_audio_hour": round(label, 3),
        "label_whole_prompts_s_per_audio_hour": round(whole, 3),
        "s_per_audio_hour": round(total, 3),
        "ceiling_rtfx": round(3600 / total, 1),
        "emotion_over_asr": round((features + label) / asr, 3),
        "emotion_over_asr_whole_prompts": round((features + whole) / asr, 3),
    }


def versions() -> dict[str, str]:
    import peft
    import transformers

    return {
        "torch": torch.__version__,
        "cuda": str(torch.version.cuda),
        "transformers": transformers.__version__,
        "peft": peft.__version__,
    }


def summary(stages: dict[str, dict[str, Any]], device: str) -> str:
    unit = "peak GiB" if device.startswith("cuda") else "peak RSS MiB"
    lines = [f"{'stage':<10}{'seconds':>10}{'RTFx':>10}{unit:>14}{'plan GB':>9}  note"]
    for name, f in stages.items():
        if "error" in f:
            lines.append(f"{name:<10}  FAILED: {f['error']}")
            continue
        part = next((v for k, v in f.items() if k.startswith("segment_")), f)
        seconds = part.get("seconds", f.get("seconds_per_step", ""))
        peak = f.get("peak_gpu_gib", f.get("peak_rss_mib_so_far", ""))
        note = f.get("implementation", "")
        if "prompts_per_s" in f:
            note = f"{f['prompts_per_s']} prompts/s"
        planned = PLANNED_GPU_GB.get(name, ("", ""))
        lines.append(
            f"{name:<10}{seconds:>10}{part.get('rtfx', ''):>10}{peak:>14}{planned[0]:>9}  {note}"
        )
    lines += [
        f"plan {k}: {gb} GB: {why} (cluster/paper.yaml)" for k, (gb, why) in PLANNED_GPU_GB.items()
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--shapes",
        choices=("paper", "small"),
        default="paper",
        help="paper: the paper's model sizes; small: the same code path at the small profile's sizes",
    )
    parser.add_argument(
        "--device", default="cuda", help="cuda (default), cuda:N or cpu (a smoke run)"
    )
    parser.add_argument(
        "--stages", default=",".join(STAGES), help=f"comma-separated, of {', '.join(STAGES)}"
    )
    parser.add_argument(
        "--asr-model",
        type=Path,
        help="CTranslate2 Whisper directory (default: the paper-random or small profile's "
        "whisper under ANNOTATOR_HOME); 'none' for transformers' Whisper",
    )
    args = parser.parse_args()
    stages = [s for s in args.stages.split(",") if s]
    unknown = sorted(set(stages) - set(STAGES))
    if unknown:
        parser.error(f"unknown stages {unknown}; known: {', '.join(STAGES)}")
    device = args.device
    cuda = device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        parser.error("no CUDA device here; a CPU smoke run: --shapes small --device cpu")
    if cuda and torch.device(device).index is not None:
        torch.cuda.set_device(device)
    asr_model = args.asr_model
    if asr_model is None:
        profile = "paper-random" if args.shapes == "paper" else "small"
        asr_model = annotator_home() / profile / "whisper"
    elif str(asr_model) == "none":
        asr_model = None

    import transformers

    transformers.logging.set_verbosity_error()  # Whisper's generate warns about its own defaults
    transformers.set_seed(0)
    configs = paper_configs() if args.shapes == "paper" else small_configs()
    work = PAPER if args.shapes == "paper" else SMOKE
    # CPU kernels for half types are partial and slow: the smoke run stays in float32.
    half, llm_dtype = (torch.float16, torch.bfloat16) if cuda else (torch.float32, torch.float32)
    calls = {
        "asr": lambda: stage_asr(configs, device, work, half, asr_model),
        "features": lambda: stage_features(configs, device, work, half),
        "label": lambda: stage_label(configs, device, work, llm_dtype),
        "train1": lambda: stage_train1(configs, device, work),
        "train2": lambda: stage_train2(configs, device, work, llm_dtype),
    }
    results = {name: run_stage(name, device, calls[name]) for name in stages}
    if args.shapes == "paper":  # the larger batches, each stage at its typical segment length
        for name in [n for n in stages if n in MORE_BATCHES]:
            field, sizes = MORE_BATCHES[name]
            for size in sizes:
                more = replace(work, **{field: size}, segment_s=work.segment_s[:1])
                call = {
                    "asr": lambda w=more: stage_asr(configs, device, w, half, asr_model),
                    "features": lambda w=more: stage_features(configs, device, w, half),
                    "label": lambda w=more: stage_label(configs, device, w, llm_dtype),
                }[name]
                results[f"{name}@{size}"] = run_stage(f"{name}@{size}", device, call)
    chained = chain(results)
    print(f"chain: {json.dumps(chained)}", file=sys.stderr, flush=True)
    name = "gpu" if args.shapes == "paper" and cuda else f"gpu-{args.shapes}-{device.split(':')[0]}"
    write_result(
        name,
        {
            "shapes": args.shapes,
            "device": device,
            "device_name": torch.cuda.get_device_name(device) if cuda else None,
            "versions": versions(),
            "workload": asdict(work),
            "planned_gpu_gb": {
                k: {"gb": gb, "why": why} for k, (gb, why) in PLANNED_GPU_GB.items()
            },
            "stages": results,
            "chain": chained,
        },
    )
    print(summary(results, device))
    failed = [s for s, f in results.items() if "error" in f]
    if failed:
        raise SystemExit(f"stages failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
