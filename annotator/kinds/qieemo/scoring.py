"""A manifest scored by a Qieemo bundle as ``QieemoStage`` serves it (annotator/kinds/plugin.py)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def posteriors(config, bundle, examples: Sequence, labeler=None, ablate: str | None = None):
    """The CTC encoder and the model, as ``QieemoStage`` serves them (no transcript: the texts
    returned are empty). ``ablate="audio"`` gives it silence; there is no text to take away."""
    from annotator.kinds.qieemo.model import CTCEncoder, Qieemo
    from annotator.kinds.qieemo.model import posteriors as qieemo_probs
    from annotator.models.calibration import scaled
    from training import common
    from training.data import load_audios

    if ablate not in (None, "audio"):
        raise ValueError(f"a Qieemo bundle hears no transcript: ablate {ablate!r} means nothing")
    device, dtype = common.encoder_device(config)
    encoder = CTCEncoder(
        common.model_path(bundle.base["ctc_encoder"], config), device=device, dtype=dtype
    )
    model = Qieemo.load(bundle.root).to(device, dtype)
    audios = load_audios(examples, config.s3, config.audio)
    if ablate == "audio":
        audios = [np.zeros_like(a) for a in audios]
    probs = qieemo_probs(encoder, model, audios)
    return scaled(probs, bundle.temperature), ["" for _ in examples]
