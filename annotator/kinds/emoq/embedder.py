"""HuBERT + EmoQ-Former + projector in one place: audio and transcript in, soft tokens out.

These three run in one actor on one device: HuBERT's frames (~740 MB per audio hour at paper size)
never leave it; only e (one vector per segment) and its projection do.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from annotator.kinds.emoq.emoq_former import EmoQFormer
from annotator.kinds.emoq.projector import Projector
from annotator.models.bundle import Bundle, heard
from annotator.models.hubert import HubertFeatures
from annotator.models.length_groups import length_groups
from annotator.models.transcript import TranscriptTokenizer


class EmotionEmbedder:
    """``dtype``: what HuBERT, the EmoQ-Former and the projector run in (their weights are
    stored in float32); the soft tokens come out in it too."""

    def __init__(
        self,
        bundle: Bundle,
        hubert: str,
        hubert_layer: int = -1,
        device: str = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> None:
        self.hubert = HubertFeatures(hubert, layer=hubert_layer, device=device, dtype=dtype)
        self.former = EmoQFormer.load(bundle.root).to(device, dtype)
        self.projector = Projector.load(bundle.root).to(device, dtype)
        self.dtype = dtype
        if self.former.config.audio_dim != self.hubert.dim:
            raise ValueError(
                f"bundle {bundle.root} expects {self.former.config.audio_dim}-dim audio frames, "
                f"HuBERT {hubert} gives {self.hubert.dim}"
            )
        self.transcripts = TranscriptTokenizer.load(bundle.text_tokenizer_dir)
        self.inputs = bundle.inputs
        self.device = device
        # Audio samples HuBERT was given, real and padded, over the embedder's life.
        self.samples = 0
        self.padded_samples = 0

    @torch.inference_mode()
    def __call__(
        self, waveforms: Sequence[np.ndarray], transcripts: Sequence[str]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(e, soft tokens): (batch, embed_dim) unit vectors and (batch, llm_dim) projections.
        A bundle trained on one input hears only that one (``Bundle.inputs``).

        The batch runs as groups of like length (annotator/models/length_groups.py): each item's
        result is what it gets alone, as HuBERT's mask and per-waveform normalisation make it,
        so the grouping saves padding and changes nothing else."""
        waveforms, transcripts = heard(self.inputs, waveforms, transcripts)
        if not waveforms:
            raise ValueError("no segments to embed")
        parts, order = [], []
        for group in length_groups([len(w) for w in waveforms]):
            clips = [waveforms[i] for i in group]
            self.samples += sum(len(c) for c in clips)
            self.padded_samples += max(len(c) for c in clips) * len(clips)
            frames, frame_mask = self.hubert(clips)
            ids, text_mask = self.transcripts([transcripts[i] for i in group], self.device)
            parts.append(self.former(frames, frame_mask, ids, text_mask))
            order += group
        # Row k of the groups' results is item order[k]: put each item back in its place.
        e = torch.cat(parts)[torch.as_tensor(np.argsort(order), device=self.device)]
        return e, self.projector(e)
