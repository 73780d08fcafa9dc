"""The emosllm kind's stage actor (annotator/kinds/plugin.py)."""

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


class EmoSLLMStage(Stage):
    """An EmoSLLM bundle's features (annotator/kinds/emosllm/model.py): the frozen audio encoder and
    the query-pooling mapper, audio → the bundle's ``soft_tokens`` soft tokens per segment,
    flattened into ``soft`` for the label stage. The audio column leaves the stream here."""

    stage = "emosllm"

    def __init__(self, config: AnnotatorConfig) -> None:
        from annotator.kinds.emosllm.model import EmoSLLMEmbedder

        bundle, device, dtype = served_bundle(config, "emosllm")
        self.embedder = EmoSLLMEmbedder(
            bundle, model_path(bundle.base["audio_encoder"], config), device=device, dtype=dtype
        )
        self.where = where_am_i()
        self._guard(config)

    def process(self, batch: pa.Table) -> pa.Table:
        rows = segment_rows(batch)
        tokens = self.embedder(waveforms(batch, rows)) if rows else None
        return placed(with_soft(batch, rows, tokens), "emosllm", self.where)
