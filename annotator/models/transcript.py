"""The transcript as the models see it: one cut and one tokenization, in training, evaluation and
serving alike.

The EmoQ-Former reads at most :data:`MAX_TEXT_TOKENS` tokens of its (BERT-family) tokenizer, and
the LLM prompt carries the same words. :meth:`TranscriptTokenizer.cut` shortens a transcript to
the text those tokens cover; the EmoQ-Former's ids and the prompt are both made from the cut
text. So the model is served exactly what it learned from, and a long transcript never overflows
RoBERTa's 512 positions.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

MAX_TEXT_TOKENS = 128  # special tokens included


class TranscriptTokenizer:
    """Cuts and tokenizes transcripts for the EmoQ-Former (a fast Hugging Face tokenizer)."""

    def __init__(self, tokenizer, max_tokens: int = MAX_TEXT_TOKENS) -> None:
        self.tokenizer = tokenizer
        self.max_tokens = max_tokens

    @classmethod
    def load(cls, path: str | Path, max_tokens: int = MAX_TEXT_TOKENS) -> TranscriptTokenizer:
        from transformers import AutoTokenizer

        return cls(AutoTokenizer.from_pretrained(path), max_tokens)

    def cut(self, text: str | None) -> str:
        """``text`` up to the end of its last token that fits (whitespace-normalised)."""
        text = " ".join((text or "").split())
        enc = self.tokenizer(
            text,
            truncation=True,
            max_length=self.max_tokens,
            return_offsets_mapping=True,
            return_overflowing_tokens=False,
        )
        ends = [end for start, end in enc["offset_mapping"] if end > start]
        if not ends or ends[-1] >= len(text):
            return text
        return text[: ends[-1]].rstrip()

    def __call__(
        self, texts: Sequence[str | None], device: str | torch.device = "cpu"
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(ids, mask) of the cut texts, padded to the longest."""
        enc = self.tokenizer(
            [self.cut(t) for t in texts],
            padding=True,
            truncation=True,
            max_length=self.max_tokens,
            return_tensors="pt",
        )
        return enc["input_ids"].to(device), enc["attention_mask"].bool().to(device)
