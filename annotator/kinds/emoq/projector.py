"""The projector (EmoQ §2.3): maps the emotion embedding e to the LLM's token-embedding width."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn


class Projector(nn.Module):
    """Two linear layers with a GELU between them: e (embed_dim) → one soft token (llm_dim)."""

    def __init__(self, embed_dim: int, llm_dim: int) -> None:
        super().__init__()
        self.embed_dim, self.llm_dim = embed_dim, llm_dim
        self.net = nn.Sequential(
            nn.Linear(embed_dim, llm_dim), nn.GELU(), nn.Linear(llm_dim, llm_dim)
        )

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        return self.net(e)

    def save(self, directory: Path) -> None:
        from safetensors.torch import save_file

        (directory / "projector.json").write_text(
            json.dumps({"embed_dim": self.embed_dim, "llm_dim": self.llm_dim}, sort_keys=True)
        )
        save_file(
            {k: v.contiguous() for k, v in self.state_dict().items()},
            directory / "projector.safetensors",
        )

    @classmethod
    def load(cls, directory: Path) -> Projector:
        from safetensors.torch import load_file

        model = cls(**json.loads((directory / "projector.json").read_text()))
        model.load_state_dict(load_file(directory / "projector.safetensors"))
        return model.eval()
