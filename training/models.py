"""The trained modules of both stages and the stage-2 loss, importable without the project's
configuration (so a bare GPU machine's benchmark, ``benchmarks/gpu.py``, runs the same code)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from training import losses


class Stage1Model(nn.Module):
    def __init__(self, former, num_classes: int) -> None:
        super().__init__()
        self.former = former
        dim = former.config.embed_dim
        self.head = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, num_classes))

    def forward(self, frames, frame_mask, ids, text_mask):
        e = self.former(frames, frame_mask, ids, text_mask)
        return e, self.head(e)


def with_soft_tokens(embeds, audio_position, soft):
    """(batch, len, hidden) LLM input: each row's token embeddings with its soft tokens from
    ``audio_position`` on (their slots, recorded when the prompt was built; the ids there are
    never read) — the rows ``PromptEmbedder.build`` serves. ``soft``: (batch, hidden) for one
    soft token (EmoQ), (batch, n, hidden) for n (EmoSLLM)."""
    if soft.dim() == 2:
        soft = soft[:, None, :]
    n, hidden = soft.shape[1], soft.shape[2]
    positions = torch.arange(embeds.shape[1], device=embeds.device)
    offset = positions[None, :] - audio_position[:, None]  # (batch, len)
    is_audio = ((offset >= 0) & (offset < n))[..., None]
    index = offset.clamp(0, n - 1)[..., None].expand(-1, -1, hidden)
    return torch.where(is_audio, soft.gather(1, index).to(embeds.dtype), embeds)


class Stage2Model(nn.Module):
    """EmoQ's stage 2: EmoQ-Former → projector → one soft token in the LoRA LLM's prompt."""

    INPUTS = (
        "frames",
        "frame_mask",
        "ids",
        "text_mask",
        "prompt_ids",
        "prompt_mask",
        "audio_position",
    )

    def __init__(self, former, projector, llm) -> None:
        super().__init__()
        self.former, self.projector, self.llm = former, projector, llm

    def prompt_embeds(self, prompt_ids, audio_position, soft):
        return with_soft_tokens(self.llm.get_input_embeddings()(prompt_ids), audio_position, soft)

    def forward(self, frames, frame_mask, ids, text_mask, prompt_ids, prompt_mask, audio_position):
        soft = self.projector(self.former(frames, frame_mask, ids, text_mask))
        embeds = self.prompt_embeds(prompt_ids, audio_position, soft)
        return self.llm(inputs_embeds=embeds, attention_mask=prompt_mask).logits


class EmoSLLMModel(nn.Module):
    """EmoSLLM (annotator/models/emosllm.py): the query-pooling mapper's soft tokens in the LoRA
    LLM's prompt; the audio encoder is frozen and runs before (its frames are the input)."""

    INPUTS = ("frames", "frame_mask", "prompt_ids", "prompt_mask", "audio_position")

    def __init__(self, mapper, llm) -> None:
        super().__init__()
        self.mapper, self.llm = mapper, llm

    def forward(self, frames, frame_mask, prompt_ids, prompt_mask, audio_position):
        soft = self.mapper(frames, frame_mask)
        embeds = with_soft_tokens(self.llm.get_input_embeddings()(prompt_ids), audio_position, soft)
        return self.llm(inputs_embeds=embeds, attention_mask=prompt_mask).logits


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
