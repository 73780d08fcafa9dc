"""The reference labeler: transformers + PEFT, the computation that vLLM serving must equal."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch


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
            lengths = torch.tensor([len(e) for e in chunk])
            width = chunk[0].shape[1]
            batch = torch.zeros(len(chunk), int(lengths.max()), width, dtype=self.model.dtype)
            mask = torch.zeros(batch.shape[:2], dtype=torch.long)
            for i, e in enumerate(chunk):
                batch[i, : len(e)] = e
                mask[i, : len(e)] = 1
            with torch.inference_mode():
                out = self.model(inputs_embeds=batch, attention_mask=mask).logits
            rows.append(out[torch.arange(len(chunk)), lengths - 1].float())
        return torch.cat(rows)

    def posteriors(self, prompt_embeds: Sequence[torch.Tensor]) -> np.ndarray:
        return self.logits(prompt_embeds)[:, self.ids].softmax(dim=-1).numpy()
