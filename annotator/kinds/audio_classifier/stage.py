"""The audio-classifier kind's stage actor (annotator/kinds/plugin.py)."""

from __future__ import annotations

import pyarrow as pa

from annotator.config import AnnotatorConfig
from annotator.pipeline.stages import (
    Stage,
    model_path,
    placed,
    segment_rows,
    served_bundle,
    waveforms,
    where_am_i,
    with_emotions,
)


class AudioClassifierStage(Stage):
    """An audio-classifier bundle's one stage (annotator/kinds/audio_classifier/model.py): the
    checkpoint's posterior over its own labels, mapped onto the bundle's, from the audio alone
    (``audio_only`` is true on every row). The audio column leaves the stream here."""

    stage = "audio_classifier"

    def __init__(self, config: AnnotatorConfig) -> None:
        from annotator.kinds.audio_classifier.model import AudioClassifier

        self.bundle, device, dtype = served_bundle(config, self.stage)
        checkpoint = model_path(self.bundle.base["classifier"], config)
        self.classifier = AudioClassifier.for_bundle(self.bundle, checkpoint, device, dtype)
        self.batch_size = getattr(config.stages, self.stage).batch_size
        below = config.models.unsure_below
        self.unsure_below = self.bundle.unsure_below if below is None else below
        self.where = where_am_i()
        self._guard(config)

    def process(self, batch: pa.Table) -> pa.Table:
        rows = segment_rows(batch)
        clips = waveforms(batch, rows)
        probs = self.classifier.posteriors(clips, self.batch_size) if rows else None
        batch = batch.drop_columns(["audio"])
        labelled = with_emotions(
            batch, rows, probs, self.bundle, self.unsure_below, [True] * len(rows)
        )
        return placed(labelled, self.stage, self.where)
