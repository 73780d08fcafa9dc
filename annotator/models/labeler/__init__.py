"""Emotion labelers: prompt embeddings in, a posterior over the label set out (EmoQ Eq. 8–9).

``reference`` computes it with transformers + PEFT; ``vllm`` serves the same computation. Tests hold
the two equal; the pipeline uses vLLM.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
import torch


class Labeler(Protocol):
    def posteriors(self, prompt_embeds: Sequence[torch.Tensor]) -> np.ndarray:
        """(n, labels) probabilities, rows summing to 1, in the bundle's label order."""
        ...
