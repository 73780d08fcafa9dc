"""A manifest scored by a MiSTER-E bundle: each source's turns together, in time order, through
the context model as the sink labels a finished file (annotator/kinds/mister_e/train.py)."""

from __future__ import annotations

from collections.abc import Sequence


def posteriors(config, bundle, examples: Sequence, labeler=None, ablate: str | None = None):
    from annotator.kinds.mister_e import train
    from annotator.models.calibration import scaled

    if ablate is not None:
        raise ValueError("ablations are not built for MiSTER-E bundles")
    probs = train.posteriors(config, bundle, list(examples))["context"]
    return scaled(probs, bundle.temperature), [ex.transcript for ex in examples]
