"""Frozen HuBERT frame features, batched with padding and a frame-level mask (any wav2vec2-family
encoder loads the same way, WavLM for one)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


def padded_inputs(
    extractor, waveforms: Sequence[np.ndarray], device: str, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """A wav2vec2-family feature extractor's padded batch of 16 kHz waveforms (each normalised
    over its own samples) and its sample mask, on ``device``."""
    inputs = extractor(
        [np.asarray(w, dtype=np.float32) for w in waveforms],
        sampling_rate=16_000,
        padding=True,
        return_attention_mask=True,
        return_tensors="pt",
    )
    return inputs["input_values"].to(device, dtype), inputs["attention_mask"].to(device)


class HubertFeatures:
    """HuBERT (or another wav2vec2-family encoder: WavLM, wav2vec 2.0, loaded by its config's
    model type) in eval mode with gradients off; ``layer`` picks the hidden state (-1 = last).

    Waveforms are 16 kHz mono float32. The feature extractor normalises each waveform over its own
    samples only, and the returned mask marks the frames computed from real samples, so a batch
    gives each item the features it would get alone.
    """

    def __init__(
        self,
        name_or_path: str,
        layer: int = -1,
        device: str = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> None:
        from transformers import AutoModel, Wav2Vec2FeatureExtractor

        self.model = (
            AutoModel.from_pretrained(name_or_path, use_safetensors=True, dtype=dtype)
            .eval()
            .to(device)
        )
        self.dtype = dtype
        self.model.requires_grad_(False)
        self.extractor = Wav2Vec2FeatureExtractor.from_pretrained(name_or_path)
        self.layer = layer
        self.device = device
        self.dim = self.model.config.hidden_size

    @torch.inference_mode()
    def __call__(self, waveforms: Sequence[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        """(batch, frames, dim) features and a (batch, frames) bool mask of real frames."""
        values, sample_mask = padded_inputs(self.extractor, waveforms, self.device, self.dtype)
        out = self.model(values, attention_mask=sample_mask, output_hidden_states=self.layer != -1)
        hidden = out.last_hidden_state if self.layer == -1 else out.hidden_states[self.layer]
        frame_mask = self.model._get_feature_vector_attention_mask(hidden.shape[1], sample_mask)
        return hidden, frame_mask.bool()


def features_dtype(name: str, device: str) -> torch.dtype:
    """``models.features_dtype`` as a torch dtype: ``auto`` is float16 on a GPU, else float32."""
    if name == "auto":
        return torch.float16 if device.startswith("cuda") else torch.float32
    return getattr(torch, name)
