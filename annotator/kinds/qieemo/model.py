"""Qieemo (arXiv 2503.22687): emotion from an ASR encoder's own layers, no transcript, no LLM.

    waveform ─► CTC encoder (frozen) ─► hidden states of its upper blocks ─► multi-block fusion
                       │                 (learned softmax weights, Conv2D over time × feature)
                       └─► CTC posteriors (phonetic) ──► keys/values ─┐
                                       fused emotion features: queries ─► cross-modal attention
                                       ─► masked attentive pooling ─► classifier ─► logits

What the paper's abstract and summaries state: blocks 7–12 of a 12-block
encoder fused, then Conv2D (MMF); emotion features as queries and phonetic posteriors as
keys/values (CMA). What it does not state and is chosen here ([guess], each a
:class:`QieemoConfig` field): the Conv2D's shape (3 × 3 over time × feature, ``conv_channels``),
the width of the attention (``hidden``), masked attentive pooling and a linear classifier; another
encoder depth takes six evenly spaced blocks of its upper half ending at the last
(:func:`upper_blocks`). The encoder is any transformers CTC model (a HuBERT or Conformer CTC
checkpoint at paper size; a tiny random HuBERT CTC in the small profile) and stays frozen.

Every frame of padding is masked in the fusion's output, the attention's keys and the pooling, so
a segment gets the logits it would get alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from annotator.models.bundle import Bundle, BundleError, write_meta
from annotator.models.config_and_weights import ConfigAndWeights

CONFIG = "qieemo.json"
WEIGHTS = "qieemo.safetensors"


def upper_blocks(blocks: int, count: int = 6) -> list[int]:
    """Which blocks (1-based, as ``hidden_states`` indexes them: 0 is the embeddings) are
    fused: the paper's 7–12 of 12; for another depth ``count`` evenly spaced over the upper
    half, ending at the last."""
    if blocks < 1:
        raise ValueError("the encoder needs at least one block")
    first = blocks // 2 + 1
    picked = np.linspace(first, blocks, num=min(count, blocks - first + 1))
    return sorted({int(b) for b in np.rint(picked)})


@dataclass
class QieemoConfig:
    encoder_dim: int  # the CTC encoder's hidden size
    vocab: int  # its CTC vocabulary: the phonetic posteriors' width
    blocks: list[int]  # hidden_states indices fused (upper_blocks)
    num_labels: int
    hidden: int = 256  # [guess] width of the cross-modal attention
    heads: int = 4
    conv_channels: int = 8  # [guess] Conv2D output channels over (time, feature)
    dropout: float = 0.1
    labels: list[str] = field(default_factory=list)


class Qieemo(ConfigAndWeights, nn.Module):
    """The trainable part of Qieemo over a frozen encoder's outputs."""

    CONFIG, WEIGHTS, CONFIG_TYPE = CONFIG, WEIGHTS, QieemoConfig

    def __init__(self, config: QieemoConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        # Per block and feature: the frozen encoder's frames are standardised before fusion,
        # (x - mean) * inv_std, from the training split's statistics (set_feature_statistics,
        # called by training before the first step), then trained with the rest. Identity until
        # then. [guess]: not in the paper; a random encoder's frames share a large common
        # component that drowns the rest without it (README, "Bundle kinds").
        self.feature_mean = nn.Parameter(torch.zeros(len(c.blocks), c.encoder_dim))
        self.feature_inv_std = nn.Parameter(torch.ones(len(c.blocks), c.encoder_dim))
        self.block_logits = nn.Parameter(torch.zeros(len(c.blocks)))
        self.conv = nn.Conv2d(len(c.blocks), c.conv_channels, kernel_size=3, padding=1)
        self.fuse = nn.Linear(c.conv_channels * c.encoder_dim, c.hidden)
        self.phonetic = nn.Linear(c.vocab, c.hidden)
        self.attention = nn.MultiheadAttention(
            c.hidden, c.heads, dropout=c.dropout, batch_first=True
        )
        self.norm = nn.LayerNorm(c.hidden)
        self.score = nn.Linear(c.hidden, 1)
        self.dropout = nn.Dropout(c.dropout)
        self.classifier = nn.Linear(c.hidden, c.num_labels)

    def forward(
        self,
        hidden_states: Sequence[torch.Tensor],
        ctc_logits: torch.Tensor,
        frame_mask: torch.Tensor,
    ) -> torch.Tensor:
        """(batch, num_labels) logits from the encoder's ``hidden_states`` (all of them, as
        transformers returns them; or only the fused ones, stacked (batch, len(config.blocks),
        frames, dim), which is what training keeps), its (batch, frames, vocab) CTC logits and a
        (batch, frames) bool mask of real frames."""
        if isinstance(hidden_states, torch.Tensor):
            blocks = hidden_states
        else:
            blocks = torch.stack([hidden_states[b] for b in self.config.blocks], dim=1)
        keep = frame_mask.unsqueeze(-1).to(ctc_logits.dtype)
        mean, inv_std = (p.to(blocks.dtype)[None, :, None, :] for p in self.feature_parameters())
        blocks = (blocks - mean) * inv_std
        weights = torch.softmax(self.block_logits, dim=0)
        stacked = blocks * weights.view(1, -1, 1, 1).to(blocks.dtype) * keep.unsqueeze(1)
        fused = self.conv(stacked)  # (batch, channels, frames, dim)
        batch, channels, frames, dim = fused.shape
        fused = fused.permute(0, 2, 1, 3).reshape(batch, frames, channels * dim)
        emotion = torch.relu(self.fuse(fused))
        phonetic = self.phonetic(torch.softmax(ctc_logits, dim=-1))
        attended, _ = self.attention(emotion, phonetic, phonetic, key_padding_mask=~frame_mask)
        x = self.norm(emotion + self.dropout(attended))
        scores = self.score(x).squeeze(-1).masked_fill(~frame_mask, torch.finfo(x.dtype).min)
        pooled = (torch.softmax(scores, dim=-1).unsqueeze(-1) * x).sum(dim=1)
        return self.classifier(self.dropout(pooled))

    def feature_parameters(self) -> tuple[nn.Parameter, nn.Parameter]:
        return self.feature_mean, self.feature_inv_std

    @torch.no_grad()
    def set_feature_statistics(self, mean: torch.Tensor, inv_std: torch.Tensor) -> None:
        """Standardise the fused blocks' features by the training split's statistics: per block
        and feature, their ``mean`` and ``1/std`` (training/common.py, ``frame_statistics``)."""
        self.feature_mean.copy_(mean)
        self.feature_inv_std.copy_(inv_std)


class CTCEncoder:
    """A frozen transformers CTC model: every hidden state, the CTC logits and a mask of real
    frames for a padded batch of 16 kHz waveforms (each normalised over its own samples)."""

    def __init__(
        self, name_or_path: str, device: str = "cpu", dtype: torch.dtype = torch.float32
    ) -> None:
        from transformers import AutoFeatureExtractor, AutoModelForCTC

        self.model = (
            AutoModelForCTC.from_pretrained(name_or_path, use_safetensors=True, dtype=dtype)
            .eval()
            .to(device)
        )
        self.model.requires_grad_(False)
        self.extractor = AutoFeatureExtractor.from_pretrained(name_or_path)
        self.device, self.dtype = device, dtype
        self.dim = self.model.config.hidden_size
        self.blocks = self.model.config.num_hidden_layers
        self.vocab = self.model.config.vocab_size

    @torch.inference_mode()
    def __call__(
        self, waveforms: Sequence[np.ndarray]
    ) -> tuple[tuple[torch.Tensor, ...], torch.Tensor, torch.Tensor]:
        from annotator.models.hubert import padded_inputs

        values, sample_mask = padded_inputs(self.extractor, waveforms, self.device, self.dtype)
        out = self.model(values, attention_mask=sample_mask, output_hidden_states=True)
        frames = out.logits.shape[1]
        frame_mask = self.model._get_feature_vector_attention_mask(frames, sample_mask).bool()
        return out.hidden_states, out.logits, frame_mask


def posteriors(
    encoder: CTCEncoder, model: Qieemo, waveforms: Sequence[np.ndarray], batch: int = 16
) -> np.ndarray:
    """(n, labels) float32 posteriors of ``waveforms`` (uncalibrated): what serving
    (``QieemoStage``) and evaluation both compute, ``batch`` clips at a time."""
    probs = []
    with torch.inference_mode():
        for start in range(0, len(waveforms), batch):
            logits = model(*encoder(waveforms[start : start + batch]))
            probs.append(torch.softmax(logits.float(), dim=-1).cpu().numpy())
    return np.concatenate(probs)


def build_untrained_qieemo_bundle(
    root: Path,
    encoder: Path,
    encoder_name: str,
    seed: int = 0,
    labels: Sequence[str] | None = None,
    hidden: int = 256,
):
    """A Qieemo bundle with freshly initialised weights over the CTC ``encoder`` (named
    ``encoder_name`` in the bundle, as the config names models): what ``annotator models init``
    gives before training."""
    from transformers import AutoConfig

    from annotator.schema import DEFAULT_LABEL_SET, label_set

    labels = list(labels or label_set(DEFAULT_LABEL_SET))
    encoder_config = AutoConfig.from_pretrained(encoder)
    torch.manual_seed(seed)
    model = Qieemo(
        QieemoConfig(
            encoder_dim=encoder_config.hidden_size,
            vocab=encoder_config.vocab_size,
            blocks=upper_blocks(encoder_config.num_hidden_layers),
            num_labels=len(labels),
            hidden=hidden,
            labels=labels,
        )
    )
    return write_qieemo_bundle(
        root, model, labels, {"ctc_encoder": encoder_name}, extra={"trained": False}
    )


def write_qieemo_bundle(
    root: Path,
    model,
    labels: Sequence[str],
    base: dict[str, str],
    extra: dict[str, Any] | None = None,
) -> Bundle:
    """A Qieemo bundle (annotator/kinds/qieemo/model.py): its fusion/attention/classifier weights and
    ``bundle.json`` naming the CTC encoder it runs over (``base["ctc_encoder"]``)."""
    if "ctc_encoder" not in base:
        raise BundleError("a Qieemo bundle names its CTC encoder: base['ctc_encoder']")
    root.mkdir(parents=True, exist_ok=True)
    model.save(root)
    meta = {
        "kind": "qieemo",
        "labels": list(labels),
        "base": dict(base),
        "extra": extra or {},
    }
    return write_meta(root, meta)
