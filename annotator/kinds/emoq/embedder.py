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

    @torch.inference_mode()
    def __call__(
        self, waveforms: Sequence[np.ndarray], transcripts: Sequence[str]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(e, soft tokens): (batch, embed_dim) unit vectors and (batch, llm_dim) projections.
        A bundle trained on one input hears only that one (``Bundle.inputs``)."""
        waveforms, transcripts = heard(self.inputs, waveforms, transcripts)
        frames, frame_mask = self.hubert(waveforms)
        ids, text_mask = self.transcripts(transcripts, self.device)
        e = self.former(frames, frame_mask, ids, text_mask)
        return e, self.projector(e)
