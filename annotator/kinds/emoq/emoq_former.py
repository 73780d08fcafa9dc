"""The EmoQ-Former (EmoQ §2.1): fuses speech frames and transcript into one emotion embedding e.

Read top to bottom, this is the paper's figure:

1. ``N_q`` learned query vectors are concatenated with the transcript's token embeddings.
2. Self-attention over the joint sequence lets queries and text attend to each other
   (padded text tokens are masked out as keys).
3. Only the query part cross-attends to the audio frames, which a linear layer has projected
   from HuBERT's width to the Q-Former's; padded frames are masked out. Before the projection
   the frames may be standardised per feature by the training split's statistics
   (``train.standardise_frames``) [not in the paper: the small profile's random HuBERT's frames
   share a large common component that collapses e in stage 1 without it; README, "Which input
   does the model learn from?"]. Otherwise those statistics stay the identity.
4. A feed-forward network, with residuals and LayerNorm after each sub-layer (BERT's post-norm).
5. Multi-head attentive pooling over the query outputs, then L2 normalisation → e, ‖e‖ = 1.

Embeddings, self-attention and FFN start from a pretrained BERT-family encoder (RoBERTa-base in
the paper, MiniLM in ``small``); queries, frame statistics, audio projection, cross-attention and
pooling are new, as in BLIP-2.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

# Parts that the pretrained encoder does not have; everything else is loaded from it.
NEW_PARTS = {"queries", "frame_mean", "frame_inv_std", "audio_proj", "pool"}
# Bundles written before the frames were standardised lack these: they load as the identity.
_IDENTITY_WHEN_ABSENT = {"frame_mean", "frame_inv_std"}


@dataclass
class EmoQFormerConfig:
    """Shape of the EmoQ-Former.

    Attributes:
        hidden_size / num_heads / intermediate_size / num_layers: the BERT it starts from.
        vocab_size / max_positions / type_vocab_size / position_offset / layer_norm_eps: BERT's
            embedding table (RoBERTa counts positions from ``pad_token_id + 1``: offset 2).
        num_queries: learned query vectors N_q.
        audio_dim: width of the HuBERT frames it cross-attends to.
        pool_heads: heads of the attentive pooling.
        embed_dim: width of e.
        dropout: dropout inside attention and FFN while training.
    """

    hidden_size: int
    num_heads: int
    intermediate_size: int
    num_layers: int
    vocab_size: int
    max_positions: int
    audio_dim: int
    type_vocab_size: int = 2
    position_offset: int = 0
    layer_norm_eps: float = 1e-12
    num_queries: int = 32
    pool_heads: int = 4
    embed_dim: int | None = None
    dropout: float = 0.1

    def __post_init__(self) -> None:
        if self.embed_dim is None:
            self.embed_dim = self.hidden_size

    @classmethod
    def from_text_encoder(
        cls,
        hf_cfg,
        audio_dim: int,
        num_queries: int = 32,
        pool_heads: int = 4,
        num_layers: int | None = None,
    ) -> EmoQFormerConfig:
        """The EmoQ-Former that a BERT-family encoder of configuration ``hf_cfg`` starts."""
        return cls(
            hidden_size=hf_cfg.hidden_size,
            num_heads=hf_cfg.num_attention_heads,
            intermediate_size=hf_cfg.intermediate_size,
            num_layers=num_layers or hf_cfg.num_hidden_layers,
            vocab_size=hf_cfg.vocab_size,
            max_positions=hf_cfg.max_position_embeddings,
            type_vocab_size=hf_cfg.type_vocab_size,
            position_offset=(hf_cfg.pad_token_id + 1) if hf_cfg.model_type == "roberta" else 0,
            layer_norm_eps=hf_cfg.layer_norm_eps,
            num_queries=num_queries,
            pool_heads=pool_heads,
            audio_dim=audio_dim,
        )

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)


class Attention(nn.Module):
    """Multi-head attention with BERT's parameter names (query/key/value, output.dense/LayerNorm)."""

    def __init__(self, cfg: EmoQFormerConfig, kv_dim: int | None = None) -> None:
        super().__init__()
        d, kv_dim = cfg.hidden_size, kv_dim or cfg.hidden_size
        self.num_heads = cfg.num_heads
        self.query = nn.Linear(d, d)
        self.key = nn.Linear(kv_dim, d)
        self.value = nn.Linear(kv_dim, d)
        self.dense = nn.Linear(d, d)
        self.LayerNorm = nn.LayerNorm(d, eps=cfg.layer_norm_eps)
        self.dropout = cfg.dropout

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        return x.view(b, n, self.num_heads, d // self.num_heads).transpose(1, 2)

    def forward(self, x: torch.Tensor, kv: torch.Tensor, kv_mask: torch.Tensor) -> torch.Tensor:
        """``kv_mask`` is (batch, kv_len), True where a key may be attended to."""
        q, k, v = self._heads(self.query(x)), self._heads(self.key(kv)), self._heads(self.value(kv))
        p = self.dropout if self.training else 0.0
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=kv_mask[:, None, None, :], dropout_p=p
        )
        out = out.transpose(1, 2).reshape(x.shape)
        return self.LayerNorm(x + F.dropout(self.dense(out), p, self.training))


class FeedForward(nn.Module):
    def __init__(self, cfg: EmoQFormerConfig) -> None:
        super().__init__()
        self.intermediate = nn.Linear(cfg.hidden_size, cfg.intermediate_size)
        self.output = nn.Linear(cfg.intermediate_size, cfg.hidden_size)
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.dropout = cfg.dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.output(F.gelu(self.intermediate(x)))
        return self.LayerNorm(x + F.dropout(h, self.dropout, self.training))


class EmoQLayer(nn.Module):
    """Self-attention over [queries; text] → cross-attention of the queries to audio → FFN."""

    def __init__(self, cfg: EmoQFormerConfig) -> None:
        super().__init__()
        self.self_attn = Attention(cfg)
        self.cross_attn = Attention(cfg)  # keys/values are the already-projected audio frames
        self.ffn = FeedForward(cfg)

    def forward(
        self,
        x: torch.Tensor,
        joint_mask: torch.Tensor,
        audio: torch.Tensor,
        audio_mask: torch.Tensor,
        n_q: int,
    ) -> torch.Tensor:
        x = self.self_attn(x, x, joint_mask)
        queries = self.cross_attn(x[:, :n_q], audio, audio_mask)
        return self.ffn(torch.cat([queries, x[:, n_q:]], dim=1))


class AttentivePooling(nn.Module):
    """Each head scores the query outputs, softmax-weights them; heads are concatenated, mixed."""

    def __init__(self, cfg: EmoQFormerConfig) -> None:
        super().__init__()
        self.score = nn.Sequential(
            nn.Linear(cfg.hidden_size, cfg.hidden_size),
            nn.Tanh(),
            nn.Linear(cfg.hidden_size, cfg.pool_heads),
        )
        self.mix = nn.Linear(cfg.pool_heads * cfg.hidden_size, cfg.embed_dim)

    def forward(self, q: torch.Tensor) -> torch.Tensor:
        weights = self.score(q).softmax(dim=1)  # (batch, n_q, heads)
        pooled = torch.einsum("bqh,bqd->bhd", weights, q)
        return self.mix(pooled.flatten(1))


class EmoQFormer(nn.Module):
    def __init__(self, cfg: EmoQFormerConfig) -> None:
        super().__init__()
        self.config = cfg
        d = cfg.hidden_size
        self.word_embeddings = nn.Embedding(cfg.vocab_size, d)
        self.position_embeddings = nn.Embedding(cfg.max_positions, d)
        self.token_type_embeddings = nn.Embedding(cfg.type_vocab_size, d)
        self.embed_norm = nn.LayerNorm(d, eps=cfg.layer_norm_eps)
        self.queries = nn.Parameter(torch.randn(cfg.num_queries, d) * 0.02)
        # (x - mean) * inv_std per HuBERT feature: the identity unless training sets the
        # training split's statistics (train.standardise_frames: set_frame_statistics before the
        # first step), then trained with the rest, as Qieemo's feature statistics are.
        self.frame_mean = nn.Parameter(torch.zeros(cfg.audio_dim))
        self.frame_inv_std = nn.Parameter(torch.ones(cfg.audio_dim))
        self.audio_proj = nn.Linear(cfg.audio_dim, d)
        self.layers = nn.ModuleList(EmoQLayer(cfg) for _ in range(cfg.num_layers))
        self.pool = AttentivePooling(cfg)

    def embed_text(self, input_ids: torch.Tensor) -> torch.Tensor:
        positions = (
            torch.arange(input_ids.shape[1], device=input_ids.device) + self.config.position_offset
        )
        x = (
            self.word_embeddings(input_ids)
            + self.position_embeddings(positions)[None]
            + self.token_type_embeddings(torch.zeros_like(input_ids))
        )
        return F.dropout(self.embed_norm(x), self.config.dropout, self.training)

    def forward(
        self,
        audio: torch.Tensor,
        audio_mask: torch.Tensor,
        input_ids: torch.Tensor,
        text_mask: torch.Tensor,
    ) -> torch.Tensor:
        """Return e (batch, embed_dim), unit length.

        Args:
            audio: HuBERT frames (batch, frames, audio_dim).
            audio_mask: (batch, frames), True for real frames.
            input_ids: transcript tokens of the BERT tokenizer (batch, tokens).
            text_mask: (batch, tokens), True for real tokens.
        """
        b, n_q = input_ids.shape[0], self.config.num_queries
        x = torch.cat([self.queries.expand(b, -1, -1), self.embed_text(input_ids)], dim=1)
        joint_mask = torch.cat([text_mask.new_ones(b, n_q), text_mask], dim=1).bool()
        frames = self.audio_proj((audio - self.frame_mean) * self.frame_inv_std)
        for layer in self.layers:
            x = layer(x, joint_mask, frames, audio_mask.bool(), n_q)
        return F.normalize(self.pool(x[:, :n_q]), dim=-1)

    @torch.no_grad()
    def set_frame_statistics(self, mean: torch.Tensor, inv_std: torch.Tensor) -> None:
        """Standardise the audio frames by the training split's per-feature ``mean`` and
        ``1/std`` (training/common.py, ``frame_statistics``)."""
        self.frame_mean.copy_(mean)
        self.frame_inv_std.copy_(inv_std)

    # -- loading -----------------------------------------------------------------------------

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str,
        audio_dim: int,
        num_queries: int = 32,
        pool_heads: int = 4,
        num_layers: int | None = None,
    ) -> EmoQFormer:
        """Start from a BERT-family encoder (a path, or a hub name on a cluster); safetensors only.

        Cross-attention is initialised from the same layer's self-attention: a warm start that
        BLIP-2 also used; the audio projection, queries and pooling are random.
        """
        from transformers import AutoConfig, AutoModel

        cfg = EmoQFormerConfig.from_text_encoder(
            AutoConfig.from_pretrained(name_or_path), audio_dim, num_queries, pool_heads, num_layers
        )
        model = cls(cfg)
        encoder = AutoModel.from_pretrained(
            name_or_path, use_safetensors=True, add_pooling_layer=False
        )
        result = model.load_state_dict(
            _map_bert_weights(encoder.state_dict(), cfg.num_layers), strict=False
        )
        new = {k for k in result.missing_keys if k.split(".")[0] in NEW_PARTS}
        if set(result.missing_keys) != new or result.unexpected_keys:
            raise ValueError(f"{name_or_path} does not fit a BERT layout: {result}")
        return model

    @classmethod
    def load(cls, directory: Path) -> EmoQFormer:
        from safetensors.torch import load_file

        cfg = EmoQFormerConfig(**json.loads((directory / "emoq_former.json").read_text()))
        model = cls(cfg)
        result = model.load_state_dict(
            load_file(directory / "emoq_former.safetensors"), strict=False
        )
        if not set(result.missing_keys) <= _IDENTITY_WHEN_ABSENT or result.unexpected_keys:
            raise ValueError(f"{directory} does not hold this EmoQ-Former: {result}")
        return model.eval()

    def save(self, directory: Path) -> None:
        from safetensors.torch import save_file

        (directory / "emoq_former.json").write_text(self.config.to_json())
        state = {k: v.detach().contiguous() for k, v in self.state_dict().items()}
        save_file(state, directory / "emoq_former.safetensors")


def _map_bert_weights(bert: dict[str, torch.Tensor], num_layers: int) -> dict[str, torch.Tensor]:
    out = {
        "word_embeddings.weight": bert["embeddings.word_embeddings.weight"],
        "position_embeddings.weight": bert["embeddings.position_embeddings.weight"],
        "token_type_embeddings.weight": bert["embeddings.token_type_embeddings.weight"],
        "embed_norm.weight": bert["embeddings.LayerNorm.weight"],
        "embed_norm.bias": bert["embeddings.LayerNorm.bias"],
    }
    for i in range(num_layers):
        src = f"encoder.layer.{i}."
        parts = {
            "query": "attention.self.query",
            "key": "attention.self.key",
            "value": "attention.self.value",
            "dense": "attention.output.dense",
            "LayerNorm": "attention.output.LayerNorm",
        }
        for attn in ("self_attn", "cross_attn"):
            for ours, theirs in parts.items():
                for p in ("weight", "bias"):
                    out[f"layers.{i}.{attn}.{ours}.{p}"] = bert[f"{src}{theirs}.{p}"].clone()
        for ours, theirs in {
            "intermediate": "intermediate.dense",
            "output": "output.dense",
            "LayerNorm": "output.LayerNorm",
        }.items():
            for p in ("weight", "bias"):
                out[f"layers.{i}.ffn.{ours}.{p}"] = bert[f"{src}{theirs}.{p}"]
    return out
