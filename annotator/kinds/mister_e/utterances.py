"""MiSTER-E's first stage: one speech and one text embedding per utterance, which the context
model (annotator/kinds/mister_e/model.py) reads in time order.

    waveform ─► frozen speech encoder (any wav2vec2-family model: annotator/models/hubert.py)
               ─► frames ─► masked attentive pooling ─► Linear ─► speech embedding (dim)
    transcript ─► frozen text encoder (any transformers encoder: BERT, RoBERTa, …)
               ─► token states ─► masked attentive pooling ─► Linear ─► text embedding (dim)

Each modality also has a classifier over its embedding, trained in stage 1 on the utterances'
labels (annotator/kinds/mister_e/train.py) and kept in the bundle (the per-utterance prediction without
context, which the tests compare with the context model's).

What the paper does (the project's model notes): a speech LLM and a text LLM, each fine-tuned
with LoRA and a pooling head per utterance. Here the encoders stay frozen and only the pooling
heads and classifiers train ([departure]: no LoRA on the encoders); the bundle names its encoders
(``base["speech_encoder"]``, ``base["text_encoder"]``), so a cluster loads larger ones by name.
Padded frames and tokens are masked from the pooling: an utterance's embedding does not depend
on its batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from annotator.models.config_and_weights import ConfigAndWeights

CONFIG = "utterance_heads.json"
WEIGHTS = "utterance_heads.safetensors"


@dataclass(frozen=True)
class UtteranceHeadsConfig:
    speech_dim: int  # the speech encoder's width
    text_dim: int  # the text encoder's
    num_labels: int
    dim: int = 256  # each embedding's width: the context model's speech_dim and text_dim


class MaskedAttentivePool(nn.Module):
    """A learned score per position, softmax over the real ones, the weighted sum."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.score = nn.Linear(width, 1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        scores = self.score(x).squeeze(-1).masked_fill(~mask.bool(), float("-inf"))
        weights = torch.softmax(scores.float(), dim=-1).to(x.dtype)
        return (weights.unsqueeze(-1) * x).sum(dim=1)


class UtteranceHeads(ConfigAndWeights, nn.Module):
    """Frames and token states → the two utterance embeddings and each one's logits."""

    CONFIG, WEIGHTS, CONFIG_TYPE = CONFIG, WEIGHTS, UtteranceHeadsConfig

    def __init__(self, config: UtteranceHeadsConfig) -> None:
        super().__init__()
        self.config = config
        self.speech_pool = MaskedAttentivePool(config.speech_dim)
        self.text_pool = MaskedAttentivePool(config.text_dim)
        self.speech_out = nn.Sequential(
            nn.Linear(config.speech_dim, config.dim), nn.LayerNorm(config.dim)
        )
        self.text_out = nn.Sequential(
            nn.Linear(config.text_dim, config.dim), nn.LayerNorm(config.dim)
        )
        self.speech_classifier = nn.Linear(config.dim, config.num_labels)
        self.text_classifier = nn.Linear(config.dim, config.num_labels)

    def forward(
        self,
        frames: torch.Tensor,
        frame_mask: torch.Tensor,
        tokens: torch.Tensor,
        token_mask: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        """``speech`` / ``text`` (batch, dim) embeddings and ``speech_logits`` /
        ``text_logits`` (batch, labels)."""
        speech = self.speech_out(self.speech_pool(frames, frame_mask))
        text = self.text_out(self.text_pool(tokens, token_mask))
        return {
            "speech": speech,
            "text": text,
            "speech_logits": self.speech_classifier(speech),
            "text_logits": self.text_classifier(text),
        }


class TextStates:
    """A frozen transformers text encoder: transcripts → (batch, tokens, dim) last hidden states
    and the (batch, tokens) mask of real tokens."""

    def __init__(
        self, name_or_path: str, device: str = "cpu", dtype: torch.dtype = torch.float32
    ) -> None:
        from transformers import AutoModel, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(name_or_path)
        self.model = (
            AutoModel.from_pretrained(name_or_path, use_safetensors=True, dtype=dtype)
            .eval()
            .to(device)
        )
        self.model.requires_grad_(False)
        self.device = device
        self.dim = self.model.config.hidden_size

    @torch.inference_mode()
    def __call__(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        enc = self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=128, return_tensors="pt"
        ).to(self.device)
        out = self.model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])
        return out.last_hidden_state, enc["attention_mask"].bool()


class UtteranceEncoder:
    """A MiSTER-E bundle's served first stage: waveforms and transcripts in, the (batch, dim)
    speech and text embeddings out (float32 numpy)."""

    def __init__(
        self,
        bundle,
        speech_encoder: str,
        text_encoder: str,
        device: str = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> None:
        from annotator.models.hubert import HubertFeatures

        self.speech = HubertFeatures(speech_encoder, device=device, dtype=dtype)
        self.text = TextStates(text_encoder, device=device, dtype=dtype)
        self.heads = UtteranceHeads.load(bundle.root).to(device, dtype)
        config = self.heads.config
        if (config.speech_dim, config.text_dim) != (self.speech.dim, self.text.dim):
            raise ValueError(
                f"bundle {bundle.root} expects {config.speech_dim}-dim speech frames and "
                f"{config.text_dim}-dim text states; its encoders give {self.speech.dim} and "
                f"{self.text.dim}"
            )

    @torch.inference_mode()
    def __call__(
        self, waveforms: Sequence[np.ndarray], texts: Sequence[str]
    ) -> tuple[np.ndarray, np.ndarray]:
        frames, frame_mask = self.speech(waveforms)
        tokens, token_mask = self.text(texts)
        out = self.heads(frames, frame_mask, tokens, token_mask)
        return (
            out["speech"].float().cpu().numpy(),
            out["text"].float().cpu().numpy(),
        )


def build_untrained_mister_e_bundle(
    root,
    speech_encoder,
    text_encoder,
    base_names: dict[str, str],
    seed: int = 0,
    labels: Sequence[str] | None = None,
    dim: int = 256,
    **context: int,
):
    """A MiSTER-E bundle with fresh utterance heads and context model over the two encoders
    (named ``base_names["speech_encoder"]`` and ``["text_encoder"]``): the start of ``annotator
    train mister-e``, and servable before it. ``context``: :class:`MisterEConfig` sizes other
    than the published code's (the small profile's are tiny)."""
    from transformers import AutoConfig

    from annotator.kinds.mister_e.model import MisterE, MisterEConfig, write_mister_e_bundle
    from annotator.schema import DEFAULT_LABEL_SET, label_set

    labels = list(labels or label_set(DEFAULT_LABEL_SET))
    torch.manual_seed(seed)
    heads = UtteranceHeads(
        UtteranceHeadsConfig(
            speech_dim=AutoConfig.from_pretrained(speech_encoder).hidden_size,
            text_dim=AutoConfig.from_pretrained(text_encoder).hidden_size,
            num_labels=len(labels),
            dim=dim,
        )
    )
    model = MisterE(MisterEConfig(dim, dim, len(labels), labels=labels, **context))
    return write_mister_e_bundle(
        root, heads.eval(), model.eval(), labels, base_names, extra={"trained": False}
    )
