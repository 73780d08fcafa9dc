"""The trained modules of both stages and the stage-2 loss, importable without the project's
configuration (so a bare GPU machine's benchmark, ``benchmarks/gpu.py``, runs the same code)."""

from __future__ import annotations

from torch import nn

from training.llm import with_soft_tokens


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
