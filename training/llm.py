"""What every kind that trains a LoRA LLM shares (the kinds' trainers, annotator/kinds/*/train*.py):
soft tokens placed in the prompt's embeddings, prompt + answer batches with the Eq. 7 weights, the
weighted LM loss over them, a served bundle's adapter loaded to fine-tune, and the LoRA matrices of
a trained state exported under PEFT's names. Importable without the project's configuration (a
bare GPU machine's benchmark, ``benchmarks/gpu.py``, runs the same code)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from annotator.models.lora import LORA_TARGETS
from training import losses

if TYPE_CHECKING:
    from annotator.config import AnnotatorConfig

# The LLM's prefix in a trained model's state dict (the kinds' models hold it as ``llm``).
LLM = "llm."
ADAPTER_NAME = "default"  # PEFT's name for the one adapter get_peft_model adds


def with_soft_tokens(embeds, audio_position, soft):
    """(batch, len, hidden) LLM input: each row's token embeddings with its soft tokens from
    ``audio_position`` on (their slots, recorded when the prompt was built; the ids there are
    never read) — the rows ``PromptEmbedder.build`` serves. ``soft``: (batch, hidden) for one
    soft token, (batch, n, hidden) for n."""
    if soft.dim() == 2:
        soft = soft[:, None, :]
    n, hidden = soft.shape[1], soft.shape[2]
    positions = torch.arange(embeds.shape[1], device=embeds.device)
    offset = positions[None, :] - audio_position[:, None]  # (batch, len)
    is_audio = ((offset >= 0) & (offset < n))[..., None]
    index = offset.clamp(0, n - 1)[..., None].expand(-1, -1, hidden)
    return torch.where(is_audio, soft.gather(1, index).to(embeds.dtype), embeds)


def batch_logits(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """An LLM-kind model's logits over a collated batch (prompt + answer rows): the batch's
    tensors its ``INPUTS`` name, in order."""
    module = getattr(model, "module", model)  # DDP wraps the model
    return model(*(batch[name] for name in module.INPUTS))


def batch_loss(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    logits = batch_logits(model, batch)
    return losses.weighted_lm_loss(logits, batch["prompt_ids"], batch["weights"])


def pad_answers(
    rows: Sequence[Sequence[int]], weights: Sequence[Sequence[float]], pad: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Prompt + answer token rows right-padded with ``pad``: (ids, mask, Eq. 7 weights)."""
    longest = max(len(r) for r in rows)
    ids = torch.full((len(rows), longest), pad, dtype=torch.long)
    mask = torch.zeros(len(rows), longest, dtype=torch.long)
    w = torch.zeros(len(rows), longest)
    for k, (row, wt) in enumerate(zip(rows, weights, strict=True)):
        ids[k, : len(row)] = torch.tensor(row)
        mask[k, : len(row)] = 1
        w[k, : len(row)] = torch.tensor(wt)
    return ids, mask, w


def load_adapter(peft_model, bundle_dir: Path, llm_name: str, rank: int) -> None:
    """Start ``peft_model``'s LoRA from a bundle's adapter (fine-tuning a served bundle)."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    adapter = load_file(Path(bundle_dir) / "lora" / "adapter_model.safetensors")
    loaded = set_peft_model_state_dict(peft_model, adapter)
    if loaded.unexpected_keys:
        raise ValueError(
            f"{bundle_dir}'s LoRA does not fit {llm_name} at rank {rank}: "
            f"{loaded.unexpected_keys[:3]}"
        )


def llm_dtype(config: AnnotatorConfig) -> torch.dtype:
    """The frozen base LLM's training dtype: bf16 when ``models.dtype`` asks for a half type
    (float16 too: bf16 has fp32's range, so no loss scaling is needed), else fp32 (the small
    profile's default on CPU)."""
    return torch.float32 if config.models.dtype == "float32" else torch.bfloat16


def sequences(prompts, texts, labels, label_ids, weight: float, speakers=None):
    """Prompt + answer token ids, right-padded, with the mask, the Eq. 7 weights and each row's
    soft-token position (right padding leaves it where the prompt put it). ``speakers``: each
    segment's speaker where known ("" or None: none), named in the prompt as serving does. Each
    answer ends with the token the LLM's chat template closes an assistant turn with
    (``PromptEmbedder.end_of_turn``: ``<|im_end|>`` for Qwen, ``<|eot_id|>`` for Llama 3)."""
    tok = prompts.tokenizer
    end = prompts.end_of_turn
    rows, weights, audio_position = [], [], []
    speakers = speakers if speakers is not None else [None] * len(texts)
    for text, y, speaker in zip(texts, label_ids, speakers, strict=True):
        prompt = prompts.prompt(text, speaker or None)
        word = tok.encode(" " + labels[y], add_special_tokens=False)
        rows.append([*prompt.ids, *word, end])
        weights.append([0.0] * len(prompt) + [weight] * len(word) + [1.0])
        audio_position.append(prompt.audio_position)
    pad = tok.pad_token_id if tok.pad_token_id is not None else end
    ids, mask, w = pad_answers(rows, weights, pad)
    return ids, mask, w, torch.tensor(audio_position)


def answer_batch(prompts, labels, weight: float, items) -> dict[str, torch.Tensor]:
    """A list of examples → their padded audio frames, prompt + answer rows, Eq. 7 weights and
    soft-token positions: what every LLM kind's model reads (the whole batch of a kind without a text encoder)."""
    from training import common

    frames, frame_mask = common.pad_frames(items)
    ids, mask, weights, audio_position = sequences(
        prompts,
        [i.text for i in items],
        labels,
        [i.label for i in items],
        weight,
        [i.speaker for i in items],
    )
    return {
        "frames": frames,
        "frame_mask": frame_mask,
        "prompt_ids": ids,
        "prompt_mask": mask,
        "weights": weights,
        "audio_position": audio_position,
    }


class ExportError(ValueError):
    """A checkpoint whose tensors do not fit the stage-2 model this config describes."""


def training_record(config: AnnotatorConfig) -> dict[str, Any]:
    """What a trained bundle's record says of its training: what serving must take away as
    training did (``Bundle.inputs``), and how stage 1 ran (a bundle of an ablation says which)."""
    return {
        "trained": True,
        "inputs": config.train.inputs,
        "transcripts": config.train.transcripts,
        "stage1": {"loss": config.train.stage1_loss, "epochs": config.train.epochs_stage1},
    }


def lora_shapes(llm_config, rank: int) -> dict[str, tuple[int, int]]:
    """PEFT's saved key → shape of every LoRA matrix ``lora_config`` puts on a Qwen2/Llama-style
    decoder (``model.layers.<i>.self_attn.<q|k|v|o>_proj``), from the LLM's config alone."""
    hidden = llm_config.hidden_size
    head_dim = getattr(llm_config, "head_dim", None) or hidden // llm_config.num_attention_heads
    heads = llm_config.num_attention_heads * head_dim
    kv_heads = getattr(llm_config, "num_key_value_heads", None) or llm_config.num_attention_heads
    kv = kv_heads * head_dim
    fans = {"q_proj": (hidden, heads), "k_proj": (hidden, kv), "v_proj": (hidden, kv)}
    fans["o_proj"] = (heads, hidden)
    assert set(fans) == set(LORA_TARGETS), "lora_shapes must cover every LoRA target"
    shapes = {}
    for layer in range(llm_config.num_hidden_layers):
        for name in LORA_TARGETS:
            fan_in, fan_out = fans[name]
            module = f"base_model.model.model.layers.{layer}.self_attn.{name}"
            shapes[f"{module}.lora_A.weight"] = (rank, fan_in)
            shapes[f"{module}.lora_B.weight"] = (fan_out, rank)
    return shapes


def adapter_tensors(
    state: dict[str, Any], lora: dict[str, tuple[int, int]], where: str, llm: str, rank: int
) -> dict[str, Any]:
    """The LoRA matrices of a trained model's state (its LLM under ``llm.``), by PEFT's saved
    names (``save_lora_tensors``), each checked against ``lora_shapes``."""
    adapter = {}
    for key, shape in lora.items():
        name = LLM + _with_adapter_name(key)
        if name not in state:
            raise ExportError(f"{where} holds no {name}: not a LoRA of {llm} at rank {rank}")
        tensor = state[name]
        if tuple(tensor.shape) != shape:
            raise ExportError(
                f"{where}: {key} has shape {tuple(tensor.shape)}, "
                f"the LLM {llm} with LoRA rank {rank} needs {shape}"
            )
        adapter[key] = tensor.contiguous()
    return adapter


def _with_adapter_name(key: str) -> str:
    """PEFT's saved key → the key in the live model (``….lora_A.default.weight``)."""
    module, _, param = key.rpartition(".")
    return f"{module}.{ADAPTER_NAME}.{param}"


def _part(state: dict[str, Any], prefix: str) -> dict[str, Any]:
    return {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}
