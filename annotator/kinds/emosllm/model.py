"""EmoSLLM (arXiv 2508.14130): a frozen self-supervised audio encoder's frames, pooled by learned
queries into several soft tokens, read by a LoRA LLM beside the transcript.

    waveform ─► frozen SSL encoder (WavLM-Large at paper size; any wav2vec2-family model
                loads: annotator/models/hubert.py) ─► frames (T, audio_dim)
    frames ─► Linear(audio_dim → width) ─┐
    learned queries (num_queries, width) ┴► concatenated, a small transformer encoder over both
              (padded frames masked) ─► the query outputs ─► Linear(width → LLM width)
              ─► num_queries soft tokens

What the paper describes ([summary] in the project's model notes): 32 learned queries appended
to the audio frames, a 2-layer, 8-head, 768-wide transformer encoder, the 32 query outputs kept and
projected to the LLM's width; no cross-attention (it is not a Q-Former). The soft tokens take the
prompt's audio slots (:class:`annotator.models.prompt.PromptEmbedder` with ``audio_slots`` =
``num_queries``, the audio first in the user turn, before the transcript); the posterior is read
from the emotion words' logits after ``Emotion:``, by the LLM kinds' vLLM labeler.
[guess]: the encoder's last layer, frozen; no ASR-alignment stage is built here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from annotator.models.bundle import Bundle, BundleError, write_meta
from annotator.models.config_and_weights import ConfigAndWeights
from annotator.models.lora import lora_config, save_lora, save_lora_tensors

CONFIG = "emosllm.json"
WEIGHTS = "emosllm.safetensors"


@dataclass(frozen=True)
class EmoSLLMConfig:
    """The mapper's shape: ``audio_dim`` (the encoder's width), ``llm_dim`` (the LLM's), and the
    query pooling's ``num_queries`` soft tokens, ``width``, ``layers`` and ``heads``. The
    defaults are the paper's."""

    audio_dim: int
    llm_dim: int
    num_queries: int = 32
    width: int = 768
    layers: int = 2
    heads: int = 8


class QueryPoolingMapper(ConfigAndWeights, nn.Module):
    """Audio frames → ``num_queries`` soft tokens in the LLM's embedding space."""

    CONFIG, WEIGHTS, CONFIG_TYPE = CONFIG, WEIGHTS, EmoSLLMConfig

    def __init__(self, config: EmoSLLMConfig) -> None:
        super().__init__()
        self.config = config
        self.frames_in = nn.Linear(config.audio_dim, config.width)
        self.queries = nn.Parameter(torch.randn(config.num_queries, config.width) * 0.02)
        layer = nn.TransformerEncoderLayer(
            config.width,
            config.heads,
            dim_feedforward=4 * config.width,
            dropout=0.1,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        self.encoder = nn.TransformerEncoder(layer, config.layers, enable_nested_tensor=False)
        self.out = nn.Linear(config.width, config.llm_dim)

    def forward(self, frames: torch.Tensor, frame_mask: torch.Tensor) -> torch.Tensor:
        """(batch, T, audio_dim) frames with their (batch, T) mask of real frames → (batch,
        num_queries, llm_dim) soft tokens. Padded frames are masked from every query and frame,
        so an item's soft tokens do not depend on what else is in its batch."""
        batch = frames.shape[0]
        x = self.frames_in(frames)
        queries = self.queries.to(x.dtype).expand(batch, -1, -1)
        x = torch.cat([x, queries], dim=1)
        keep = torch.cat(
            [
                frame_mask.bool(),
                frame_mask.new_ones(batch, self.config.num_queries, dtype=torch.bool),
            ],
            dim=1,
        )
        x = self.encoder(x, src_key_padding_mask=~keep)
        return self.out(x[:, -self.config.num_queries :])


class EmoSLLMEmbedder:
    """The served features of an EmoSLLM bundle: its frozen audio encoder and mapper, waveforms
    in, (batch, num_queries, llm_dim) soft tokens out (in ``dtype``)."""

    def __init__(self, bundle, encoder: str, device: str = "cpu", dtype=torch.float32) -> None:
        from annotator.models.bundle import heard
        from annotator.models.hubert import HubertFeatures

        self.encoder = HubertFeatures(encoder, device=device, dtype=dtype)
        self.mapper = QueryPoolingMapper.load(bundle.root).to(device, dtype)
        if self.mapper.config.audio_dim != self.encoder.dim:
            raise ValueError(
                f"bundle {bundle.root} expects {self.mapper.config.audio_dim}-dim audio frames, "
                f"the encoder {encoder} gives {self.encoder.dim}"
            )
        self.inputs = bundle.inputs
        self._heard = heard

    @torch.inference_mode()
    def __call__(self, waveforms: Sequence[np.ndarray]) -> torch.Tensor:
        waveforms, _ = self._heard(self.inputs, waveforms, ["" for _ in waveforms])
        frames, mask = self.encoder(waveforms)
        return self.mapper(frames, mask)


def build_untrained_emosllm_bundle(
    root: Path,
    encoder: Path,
    llm: Path,
    base_names: dict[str, str],
    seed: int = 0,
    labels: Sequence[str] | None = None,
    lora_rank: int = 8,
    **mapper: int,
):
    """An EmoSLLM bundle with a fresh mapper and a zero LoRA: the start of ``annotator train
    emosllm``, and servable before it. ``mapper``: :class:`EmoSLLMConfig` sizes other than the
    paper's (the small profile's are tiny)."""
    from transformers import AutoConfig, AutoTokenizer

    from annotator.models.lora import untrained_lora
    from annotator.schema import DEFAULT_LABEL_SET, label_set

    labels = list(labels or label_set(DEFAULT_LABEL_SET))
    torch.manual_seed(seed)
    config = EmoSLLMConfig(
        audio_dim=AutoConfig.from_pretrained(encoder).hidden_size,
        llm_dim=AutoConfig.from_pretrained(llm).hidden_size,
        **mapper,
    )
    lora = untrained_lora(llm, lora_rank)  # before the mapper: the profile's bytes depend on it
    return write_emosllm_bundle(
        root,
        QueryPoolingMapper(config).eval(),
        lora,
        labels,
        AutoTokenizer.from_pretrained(llm),
        base_names,
        lora_rank,
        extra={"trained": False},
    )


def write_emosllm_bundle(
    root: Path,
    mapper,
    lora,
    labels: Sequence[str],
    llm_tokenizer,
    base: dict[str, str],
    lora_rank: int,
    extra: dict[str, Any] | None = None,
    lora_dropout: float = 0.1,
) -> Bundle:
    """An EmoSLLM bundle (annotator/kinds/emosllm/model.py): the query-pooling mapper, the LoRA (a
    PEFT model, or PEFT-named tensors as ``save_lora_tensors`` takes them) and ``bundle.json``
    naming the audio encoder (``base["audio_encoder"]``) and the LLM (``base["llm"]``)."""
    from annotator.models.prompt import emotion_token_ids

    if not {"audio_encoder", "llm"} <= base.keys():
        raise BundleError(
            "an EmoSLLM bundle names its base models: base['audio_encoder'], base['llm']"
        )
    root.mkdir(parents=True, exist_ok=True)
    if isinstance(lora, dict):
        save_lora_tensors(
            lora, root / "lora", lora_config(lora_rank, dropout=lora_dropout), base["llm"]
        )
    else:
        save_lora(lora, root / "lora", base["llm"])
    mapper.save(root)
    meta = {
        "kind": "emosllm",
        "labels": list(labels),
        "emotion_token_ids": emotion_token_ids(llm_tokenizer, labels),
        "soft_tokens": mapper.config.num_queries,
        "base": dict(base),
        "lora_rank": lora_rank,
        "extra": extra or {},
    }
    return write_meta(root, meta)
