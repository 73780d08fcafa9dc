"""The mister_e kind's stage actor (annotator/kinds/plugin.py)."""

from __future__ import annotations

import pyarrow as pa

from annotator.config import AnnotatorConfig
from annotator.pipeline.stages import (
    Stage,
    model_path,
    placed,
    segment_rows,
    served_bundle,
    vector_column,
    waveforms,
    where_am_i,
)


class UtterancesStage(Stage):
    """A MiSTER-E bundle's first stage (annotator/kinds/mister_e/utterances.py): each segment's
    speech embedding (from its audio) and text embedding (from its transcript), as columns
    ``utterance_speech`` and ``utterance_text``. No label here: the sink labels a finished
    file's segments together with the bundle's context model (annotator/pipeline/context.py).
    The audio column leaves the stream here."""

    stage = "utterances"

    def __init__(self, config: AnnotatorConfig) -> None:
        from annotator.kinds.mister_e.utterances import UtteranceEncoder

        bundle, device, dtype = served_bundle(config, "utterances")
        self.encoder = UtteranceEncoder(
            bundle,
            model_path(bundle.base["speech_encoder"], config),
            model_path(bundle.base["text_encoder"], config),
            device=device,
            dtype=dtype,
        )
        self.where = where_am_i()
        self._guard(config)

    def process(self, batch: pa.Table) -> pa.Table:
        rows = segment_rows(batch)
        speech = text = None
        if rows:
            texts = batch["text"].to_pylist()
            speech, text = self.encoder(waveforms(batch, rows), [texts[i] or "" for i in rows])
        n = batch.num_rows
        batch = batch.drop_columns(["audio"])
        batch = batch.append_column("utterance_speech", vector_column(n, rows, speech))
        batch = batch.append_column("utterance_text", vector_column(n, rows, text))
        return placed(batch, "utterances", self.where)
