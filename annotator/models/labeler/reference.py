"""The reference labeler: transformers + PEFT, the computation that vLLM serving must equal."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch


def right_padded(
    rows: Sequence[torch.Tensor], dtype: torch.dtype, device: str | torch.device = "cpu"
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(batch, mask, lengths): (len, hidden) prompt embeddings right-padded with zeros into one
    (n, longest, hidden) batch, its attention mask and each prompt's length."""
    lengths = torch.tensor([len(r) for r in rows], device=device)
    batch = torch.zeros(len(rows), int(lengths.max()), rows[0].shape[1], dtype=dtype, device=device)
    mask = torch.zeros(batch.shape[:2], dtype=torch.long, device=device)
    for i, r in enumerate(rows):
        batch[i, : len(r)] = r
        mask[i, : len(r)] = 1
    return batch, mask, lengths


class ReferenceLabeler:
    """Last-position logits of the emotion tokens, softmaxed (EmoQ Eq. 8–9).

    Prompts are right-padded into batches; with causal attention the logits at each prompt's own
    last position do not see the padding.
    """

    def __init__(
        self,
        llm: str | Path,
        emotion_token_ids: Sequence[int],
        lora_dir: str | Path | None = None,
        dtype: torch.dtype = torch.float32,
        batch_size: int = 16,
    ) -> None:
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(llm, dtype=dtype)
        if lora_dir is not None:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, str(lora_dir))
        self.model = model.eval()
        self.ids = torch.as_tensor(list(emotion_token_ids))
        self.batch_size = batch_size

    def logits(self, prompt_embeds: Sequence[torch.Tensor]) -> torch.Tensor:
        """(n, vocab) next-token logits at the last position of each prompt."""
        rows = []
        for start in range(0, len(prompt_embeds), self.batch_size):
            chunk = prompt_embeds[start : start + self.batch_size]
            batch, mask, lengths = right_padded(chunk, self.model.dtype)
            with torch.inference_mode():
                out = self.model(inputs_embeds=batch, attention_mask=mask).logits
            rows.append(out[torch.arange(len(chunk)), lengths - 1].float())
        return torch.cat(rows)

    def posteriors(self, prompt_embeds: Sequence[torch.Tensor]) -> np.ndarray:
        return self.logits(prompt_embeds)[:, self.ids].softmax(dim=-1).numpy()
