"""MiSTER-E's conversation model (arXiv 2602.23300, stage 2): every utterance of a recording
labelled from the utterances around it, by three experts mixed per utterance by a learned gate.

    speech embeddings (batch, U, speech_dim) ─► speech expert ─┐
    text embeddings   (batch, U, text_dim)   ─► text expert   ─┼─► gate (MLP on the three
    both streams ─► cross-modal expert (co-attention)          ─┘    experts' logits, softmax/T)
                                                                      ─► Σ weight · expert logits

* A sequence expert (speech, text): Conv1d over the utterance axis with kernels 1, 3 and 5,
  summed; a bidirectional GRU; a skip connection from the convolution's output; a classifier.
* The cross-modal expert: layers of co-attention (each stream attends to the other, residual and
  layer norm) over the utterance axis, then a classifier on both streams concatenated.
* The gate: an MLP on the concatenated expert logits, softmax at temperature 2 over the experts.

What the published code does (the project's model notes): Conv1d kernels 1/3/5, a 3-layer BiGRU
with 512 units per direction, 4 co-attention layers, gate temperature 2; the widths here are
:class:`MisterEConfig` fields (the small profile's are tiny). Unlike the published code, padded
utterances are masked everywhere: the convolutions see zeros there, the GRU runs over each
conversation's own length (packed sequences), attention never attends to them, and the losses
(annotator/kinds/mister_e/train.py, ``mister_e_loss``) leave them out — so an utterance's label does not depend
on how much padding its batch carries. No speaker identity is used anywhere.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from annotator.models.bundle import Bundle, BundleError, write_meta
from annotator.models.config_and_weights import ConfigAndWeights

CONFIG = "mister_e.json"
WEIGHTS = "mister_e.safetensors"
EXPERTS = ("speech", "text", "cross")


@dataclass(frozen=True)
class MisterEConfig:
    speech_dim: int  # width of the per-utterance speech embeddings
    text_dim: int  # and of the text embeddings
    num_labels: int
    hidden: int = 512  # GRU units per direction; the co-attention width is 2 × hidden
    gru_layers: int = 3
    kernels: tuple[int, ...] = (1, 3, 5)
    coattention_layers: int = 4
    heads: int = 8
    gate_temperature: float = 2.0
    dropout: float = 0.1
    labels: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        object.__setattr__(self, "kernels", tuple(self.kernels))  # a list when read from JSON


def _masked(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``x`` (batch, U, dim) with the padded utterances' rows zeroed."""
    return x * mask.unsqueeze(-1).to(x.dtype)


class SequenceExpert(nn.Module):
    """One modality's context expert: multi-kernel Conv1d + BiGRU with a skip connection."""

    def __init__(self, dim_in: int, config: MisterEConfig) -> None:
        super().__init__()
        width = 2 * config.hidden
        self.convs = nn.ModuleList(
            nn.Conv1d(dim_in, width, kernel_size=k, padding=k // 2) for k in config.kernels
        )
        self.gru = nn.GRU(
            width,
            config.hidden,
            num_layers=config.gru_layers,
            batch_first=True,
            bidirectional=True,
            dropout=config.dropout if config.gru_layers > 1 else 0.0,
        )
        self.norm = nn.LayerNorm(width)
        self.dropout = nn.Dropout(config.dropout)
        self.classifier = nn.Linear(width, config.num_labels)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(hidden states (batch, U, 2·hidden), logits (batch, U, labels))."""
        x = _masked(x, mask).transpose(1, 2)
        conv = _masked(sum(c(x) for c in self.convs).transpose(1, 2), mask)
        lengths = mask.sum(dim=1).clamp_min(1).cpu()
        packed = pack_padded_sequence(conv, lengths, batch_first=True, enforce_sorted=False)
        out, _ = self.gru(packed)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=conv.shape[1])
        states = _masked(self.norm(out + conv), mask)
        return states, self.classifier(self.dropout(states))


class CoAttentionLayer(nn.Module):
    """Each stream attends to the other over the utterance axis (padding never attended)."""

    def __init__(self, width: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.speech_to_text = nn.MultiheadAttention(width, heads, dropout, batch_first=True)
        self.text_to_speech = nn.MultiheadAttention(width, heads, dropout, batch_first=True)
        self.speech_norm, self.text_norm = nn.LayerNorm(width), nn.LayerNorm(width)

    def forward(self, speech, text, mask):
        pad = ~mask
        s, _ = self.speech_to_text(speech, text, text, key_padding_mask=pad)
        t, _ = self.text_to_speech(text, speech, speech, key_padding_mask=pad)
        return self.speech_norm(speech + s), self.text_norm(text + t)


class MisterE(ConfigAndWeights, nn.Module):
    """The context model over the utterances of whole recordings."""

    CONFIG, WEIGHTS, CONFIG_TYPE = CONFIG, WEIGHTS, MisterEConfig

    def __init__(self, config: MisterEConfig) -> None:
        super().__init__()
        self.config = config
        width = 2 * config.hidden
        self.speech = SequenceExpert(config.speech_dim, config)
        self.text = SequenceExpert(config.text_dim, config)
        self.coattention = nn.ModuleList(
            CoAttentionLayer(width, config.heads, config.dropout)
            for _ in range(config.coattention_layers)
        )
        self.cross_classifier = nn.Linear(2 * width, config.num_labels)
        self.gate = nn.Sequential(
            nn.Linear(len(EXPERTS) * config.num_labels, width),
            nn.GELU(),
            nn.Linear(width, len(EXPERTS)),
        )

    def forward(
        self, speech: torch.Tensor, text: torch.Tensor, mask: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """``speech`` (batch, U, speech_dim) and ``text`` (batch, U, text_dim) embeddings of each
        conversation's utterances in time order, ``mask`` (batch, U) true on real utterances.

        Returns ``logits`` (batch, U, labels): the gated mixture; ``experts`` (batch, U, 3,
        labels): each expert's (speech, text, cross); ``gate`` (batch, U, 3): the weights;
        ``speech_states`` / ``text_states`` (batch, U, 2·hidden): the representations the
        contrastive loss pairs. Padded utterances' outputs are zero (never a label)."""
        mask = mask.bool()
        speech_states, speech_logits = self.speech(speech, mask)
        text_states, text_logits = self.text(text, mask)
        s, t = speech_states, text_states
        for layer in self.coattention:
            s, t = layer(s, t, mask)
        cross_logits = self.cross_classifier(torch.cat([s, t], dim=-1))
        experts = torch.stack([speech_logits, text_logits, cross_logits], dim=2)
        gate = torch.softmax(self.gate(experts.flatten(2)) / self.config.gate_temperature, dim=-1)
        logits = (gate.unsqueeze(-1) * experts).sum(dim=2)
        keep = mask.unsqueeze(-1).to(logits.dtype)
        return {
            "logits": logits * keep,
            "experts": experts * keep.unsqueeze(-1),
            "gate": gate * keep,
            "speech_states": speech_states,
            "text_states": text_states,
        }


def write_mister_e_bundle(
    root: Path,
    heads,
    context,
    labels: Sequence[str],
    base: dict[str, str],
    extra: dict[str, Any] | None = None,
) -> Bundle:
    """A MiSTER-E bundle (annotator/kinds/mister_e/model.py, mister_e_utterances.py): the utterance
    heads, the context model and ``bundle.json`` naming the two encoders the heads pool
    (``base["speech_encoder"]``, ``base["text_encoder"]``)."""
    missing = {"speech_encoder", "text_encoder"} - set(base)
    if missing:
        raise BundleError(f"a MiSTER-E bundle names its encoders: base{sorted(missing)}")
    root.mkdir(parents=True, exist_ok=True)
    heads.save(root)
    context.save(root)
    meta = {"kind": "mister_e", "labels": list(labels), "base": dict(base), "extra": extra or {}}
    return write_meta(root, meta)
