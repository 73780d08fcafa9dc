"""The qieemo kind's stage actor (annotator/kinds/plugin.py)."""

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


class QieemoStage(Stage):
    """A Qieemo bundle's one stage (annotator/kinds/qieemo/model.py): the CTC encoder's layers and
    posteriors → the emotion, from the audio alone (``audio_only`` is true on every row). The
    audio column leaves the stream here."""

    stage = "qieemo"

    def __init__(self, config: AnnotatorConfig) -> None:
        from annotator.kinds.qieemo.model import CTCEncoder, Qieemo

        self.bundle, device, dtype = served_bundle(config, "qieemo")
        self.encoder = CTCEncoder(
            model_path(self.bundle.base["ctc_encoder"], config), device=device, dtype=dtype
        )
        self.model = Qieemo.load(self.bundle.root).to(device, dtype)
        below = config.models.unsure_below
        self.unsure_below = self.bundle.unsure_below if below is None else below
        self.where = where_am_i()
        self._guard(config)

    def process(self, batch: pa.Table) -> pa.Table:
        from annotator.kinds.qieemo.model import posteriors

        rows = segment_rows(batch)
        clips = waveforms(batch, rows)
        probs = posteriors(self.encoder, self.model, clips, len(rows)) if rows else None
        batch = batch.drop_columns(["audio"])
        labelled = with_emotions(
            batch, rows, probs, self.bundle, self.unsure_below, [True] * len(rows)
        )
        return placed(labelled, "qieemo", self.where)
