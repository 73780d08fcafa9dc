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


class Stage2Model(nn.Module):
    def __init__(self, former, projector, llm) -> None:
        super().__init__()
        self.former, self.projector, self.llm = former, projector, llm

    def prompt_embeds(self, prompt_ids, audio_position, soft):
        """(batch, len, hidden) LLM input: each row's token embeddings with its soft token at
        ``audio_position`` (its slot, recorded when the prompt was built; the id there is never
        read) — the rows ``PromptEmbedder.build`` serves."""
        embeds = self.llm.get_input_embeddings()(prompt_ids)
        positions = torch.arange(prompt_ids.shape[1], device=prompt_ids.device)
        is_audio = (positions[None, :] == audio_position[:, None])[..., None]
        return torch.where(is_audio, soft[:, None, :].to(embeds.dtype), embeds)

    def forward(self, frames, frame_mask, ids, text_mask, prompt_ids, prompt_mask, audio_position):
        soft = self.projector(self.former(frames, frame_mask, ids, text_mask))
        embeds = self.prompt_embeds(prompt_ids, audio_position, soft)
        return self.llm(inputs_embeds=embeds, attention_mask=prompt_mask).logits


def batch_logits(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The stage-2 model's logits over a collated batch (prompt + answer rows)."""
    return model(
        batch["frames"],
        batch["frame_mask"],
        batch["ids"],
        batch["text_mask"],
        batch["prompt_ids"],
        batch["prompt_mask"],
        batch["audio_position"],
    )


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
