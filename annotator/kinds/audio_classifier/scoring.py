"""A manifest scored by an audio-classifier bundle as ``AudioClassifierStage`` serves it
(annotator/kinds/plugin.py): what ``eval``, ``calibrate`` and ``review retrain`` compare."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def posteriors(config, bundle, examples: Sequence, labeler=None, ablate: str | None = None):
    """The checkpoint with the bundle's tuned tensors and mapping, as the stage serves them, the
    bundle's calibration temperature applied (no transcript: the texts returned are empty).
    ``ablate="audio"`` gives it silence of each clip's length; there is no text to take away."""
    from annotator.kinds.audio_classifier.model import AudioClassifier
    from annotator.models.calibration import scaled
    from training import common
    from training.data import load_audios

    if ablate not in (None, "audio"):
        raise ValueError(
            f"an audio-classifier bundle hears no transcript: ablate {ablate!r} means nothing"
        )
    device, dtype = common.encoder_device(config)
    checkpoint = common.model_path(bundle.base["classifier"], config)
    classifier = AudioClassifier.for_bundle(bundle, checkpoint, device, dtype)
    audios = load_audios(examples, config.s3, config.audio)
    if ablate == "audio":
        audios = [np.zeros_like(a) for a in audios]
    probs = classifier.posteriors(audios, config.stages.audio_classifier.batch_size)
    return scaled(probs, bundle.temperature), ["" for _ in examples]
