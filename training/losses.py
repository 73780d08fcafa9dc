"""The losses of EmoQ's two training stages (§2.2 and §2.4).

* Stage 1, MAL = SupCon(e, y; τ) + λ · Focal(head(e), y; γ, per-class weights). Under data
  parallelism SupCon contrasts each anchor with the whole *global* batch (every worker's share,
  gathered), as one process holding the paper's batch of 8 would.
* Stage 2, the token-weighted autoregressive loss of Eq. 7: emotion-word tokens of the answer
  weigh ``w`` (high), the other answer tokens 1, the prompt 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def supervised_contrastive(
    embeddings: torch.Tensor, labels: torch.Tensor, temperature: float = 0.07
) -> torch.Tensor:
    """Khosla et al.'s SupCon (the "out" form): for each anchor with at least one positive,
    −mean over its positives p of log( exp(z·z_p/τ) / Σ_{a≠anchor} exp(z·z_a/τ) ).

    ``embeddings`` are L2-normalised (batch, dim). Anchors without a positive in the batch are
    left out of the mean; a batch with none gives 0 (still connected to the graph).
    """
    n = embeddings.shape[0]
    logits = embeddings @ embeddings.T / temperature
    self_mask = torch.eye(n, dtype=torch.bool, device=embeddings.device)
    logits = logits.masked_fill(self_mask, float("-inf"))
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    positives = (labels[:, None] == labels[None, :]) & ~self_mask
    counts = positives.sum(dim=1)
    has = counts > 0
    if not has.any():
        return embeddings.sum() * 0.0
    per_anchor = -(log_prob.masked_fill(~positives, 0.0).sum(dim=1)[has]) / counts[has]
    return per_anchor.mean()


def gather_batch(
    embeddings: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Every worker's embeddings and labels, concatenated in rank order; unchanged without a
    process group (one process).

    The gather is differentiable (``torch.distributed.nn``): its backward sums, onto each rank's
    own slice, the gradients of every rank's (identical) loss, i.e. world_size × ∂L/∂e_local;
    DDP's gradient averaging then divides by world_size, so the parameters get exactly ∂L/∂θ of
    the loss over the global batch. Every rank must pass the same batch size (all_gather needs
    equal shapes; training/common.py's loader guarantees it)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return embeddings, labels
    from torch.distributed.nn.functional import all_gather

    gathered_labels = [torch.empty_like(labels) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered_labels, labels)
    return torch.cat(all_gather(embeddings)), torch.cat(gathered_labels)


def class_weights(labels: Sequence[int], num_classes: int) -> torch.Tensor:
    """Inverse-frequency weights from the training distribution, normalised to mean 1 over the
    classes present (absent classes get 0)."""
    counts = torch.bincount(torch.as_tensor(list(labels)), minlength=num_classes).float()
    weights = torch.where(counts > 0, 1.0 / counts.clamp(min=1), torch.zeros_like(counts))
    present = counts > 0
    return weights * present.sum() / weights[present].sum()


def focal(
    logits: torch.Tensor,
    labels: torch.Tensor,
    gamma: float = 2.0,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Lin et al.'s focal loss with per-class weights α: mean of −α_y (1 − p_y)^γ log p_y."""
    log_p = F.log_softmax(logits, dim=-1).gather(1, labels[:, None]).squeeze(1)
    loss = -((1 - log_p.exp()) ** gamma) * log_p
    if weights is not None:
        loss = loss * weights.to(loss.device)[labels]
    return loss.mean()


def mal(
    embeddings: torch.Tensor,
    logits: torch.Tensor,
    labels: torch.Tensor,
    temperature: float = 0.07,
    gamma: float = 2.0,
    lam: float = 1.0,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """The stage-1 multi-objective affective loss: SupCon over the global batch (all workers'
    embeddings) + λ · focal over this worker's share (DDP averages it over the workers)."""
    return supervised_contrastive(*gather_batch(embeddings, labels), temperature) + lam * focal(
        logits, labels, gamma, weights
    )


STAGE1_LOSSES = ("mal", "supcon", "focal")


def stage1_loss(
    kind: str,
    embeddings: torch.Tensor,
    logits: torch.Tensor,
    labels: torch.Tensor,
    temperature: float = 0.07,
    gamma: float = 2.0,
    lam: float = 1.0,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """``train.stage1_loss``: ``mal`` (the paper), or one of its terms alone, ``supcon`` or
    ``focal`` (Table 5's ablations)."""
    if kind == "mal":
        return mal(embeddings, logits, labels, temperature, gamma, lam, weights)
    if kind == "supcon":
        return supervised_contrastive(*gather_batch(embeddings, labels), temperature)
    if kind == "focal":
        return focal(logits, labels, gamma, weights)
    raise ValueError(f"stage1_loss must be one of {STAGE1_LOSSES}, not {kind!r}")


def weighted_lm_loss(
    logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """Eq. 7: Σ_t w_t · CE(logits_t, target_t) / Σ_t w_t over next-token predictions.

    ``logits`` (batch, seq, vocab) predict position t+1 from t; ``targets`` and ``weights`` are
    (batch, seq) aligned with the *inputs* (weight 0 for prompt and padding). Computed in fp32
    whatever the LLM's dtype: a bf16 log-softmax over the vocabulary loses the small
    differences the loss is made of."""
    shifted = logits[:, :-1].reshape(-1, logits.shape[-1]).float()
    target = targets[:, 1:].reshape(-1)
    weight = weights[:, 1:].reshape(-1).float()
    ce = F.cross_entropy(shifted, target.clamp(min=0), reduction="none")
    return (ce * weight).sum() / weight.sum().clamp(min=1e-12)
