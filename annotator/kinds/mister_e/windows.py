"""A whole recording through a conversation model in windows of context with overlap.

A ten-hour call centre recording holds thousands of utterances; the context model
(annotator/kinds/mister_e/model.py) is bidirectional (its GRU reads the conversation backwards too, and
co-attention sees every utterance), so a streaming recurrent state cannot label an utterance before
the recording ends, and one pass over everything grows with the recording (attention is quadratic
in it). So the utterances are cut into windows of ``window`` with ``overlap`` on each side; each
window runs alone, and each utterance takes its output from the one window in which it lies in the
kept centre (at least ``overlap`` utterances of context on both sides, except at the recording's
ends). Memory is bounded by one window whatever the length, and the cut depends only on the
number of utterances: the same recording gives the same labels however its segments arrived
(block order, number of actors).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Window:
    start: int  # first utterance the model reads
    end: int  # one past the last
    keep_start: int  # the utterances whose outputs are taken from this window
    keep_end: int


def windows(n: int, window: int, overlap: int) -> list[Window]:
    """The windows over ``n`` utterances: each reads at most ``window``; their kept centres
    tile ``0..n`` exactly once, each with ``overlap`` utterances of context on either side
    (fewer only at the recording's ends)."""
    if window < 1 or overlap < 0 or window <= 2 * overlap:
        raise ValueError(
            f"a window of {window} cannot keep {overlap} utterances of context on each side"
        )
    if n <= window:
        return [Window(0, n, 0, n)] if n else []
    out, keep = [], 0
    while keep < n:
        start = max(0, keep - overlap)
        end = min(n, start + window)
        keep_end = n if end == n else end - overlap
        out.append(Window(start, end, keep, keep_end))
        keep = keep_end
        if end == n:
            break
    return out


@torch.no_grad()
def run_in_windows(
    model, speech: torch.Tensor, text: torch.Tensor, window: int = 256, overlap: int = 32
) -> dict[str, torch.Tensor]:
    """``model``'s outputs (``logits``, ``experts``, ``gate``) for one recording's utterances
    in time order, ``speech`` (U, speech_dim) and ``text`` (U, text_dim), computed window by
    window (:func:`windows`)."""
    n = speech.shape[0]
    parts: dict[str, list[torch.Tensor]] = {"logits": [], "experts": [], "gate": []}
    for w in windows(n, window, overlap):
        mask = torch.ones(1, w.end - w.start, dtype=torch.bool, device=speech.device)
        out = model(speech[None, w.start : w.end], text[None, w.start : w.end], mask)
        keep = slice(w.keep_start - w.start, w.keep_end - w.start)
        for key in parts:
            parts[key].append(out[key][0, keep])
    return {key: torch.cat(values) for key, values in parts.items()}
