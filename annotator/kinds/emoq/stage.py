"""The emoq kind's stage actor (annotator/kinds/plugin.py)."""

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
    with_soft,
)


class FeaturesStage(Stage):
    """HuBERT + EmoQ-Former + projector: audio and transcript → one soft token per segment.

    The audio column leaves the stream here; only the soft token (``soft``) goes on."""

    stage = "features"

    def __init__(self, config: AnnotatorConfig) -> None:
        from annotator.kinds.emoq.embedder import EmotionEmbedder

        bundle, device, dtype = served_bundle(config, "features")
        self.embedder = EmotionEmbedder(
            bundle,
            model_path(config.models.hubert, config),
            hubert_layer=config.models.hubert_layer,
            device=device,
            dtype=dtype,
        )
        self.where = where_am_i()
        self._guard(config)

    def process(self, batch: pa.Table) -> pa.Table:
        rows = segment_rows(batch)
        tokens = None
        if rows:
            texts = batch["text"].to_pylist()
            _, tokens = self.embedder(waveforms(batch, rows), [texts[i] for i in rows])
        return placed(with_soft(batch, rows, tokens), "features", self.where)
