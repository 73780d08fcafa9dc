"""Model stages on hand-made batches: pass-through rows, and a segment without words."""

from __future__ import annotations

import pyarrow as pa
import pytest

from annotator.config import load_config
from annotator.pipeline.rows import ROW, blank_row
from annotator.pipeline.stages import LabelStage

pytestmark = pytest.mark.vllm


def test_label_stage_labels_a_wordless_segment_from_audio_and_passes_errors_through(
    small_home, lora_bundle, vllm_labeler
):
    config = load_config(None, models={"home": str(small_home), "bundle": str(lora_bundle)})
    stage = LabelStage(config)
    stage.labeler = vllm_labeler  # the session's engine serves this same bundle
    width = stage.prompts.table.shape[1]
    rows = []
    for kind, text in (("segment", ""), ("error", ""), ("segment", "I am so happy today")):
        row = blank_row()
        row.update(kind=kind, call_id="c", recording_id="r")
        rows.append(row)
        rows[-1]["text"] = text
        rows[-1]["soft"] = [0.1] * width if kind == "segment" else []
    schema = ROW.append(pa.field("text", pa.string())).append(
        pa.field("soft", pa.list_(pa.float32()))
    )
    out = stage(pa.Table.from_pylist(rows, schema=schema)).to_pylist()
    wordless, error, spoken = out
    assert wordless["audio_only"] and not spoken["audio_only"]
    for row in (wordless, spoken):
        assert abs(sum(p["prob"] for p in row["emotion_probs"]) - 1) < 1e-4
        assert row["emotion"] in stage.bundle.labels
    # Same soft token, different words: the transcript reaches the LLM.
    assert wordless["emotion_probs"] != spoken["emotion_probs"]
    assert error["emotion"] == "" and error["emotion_probs"] == [] and "soft" not in error
