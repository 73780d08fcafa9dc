"""Model stages on hand-made batches: pass-through rows, and a segment without words."""

from __future__ import annotations

import pyarrow as pa
import pytest

from annotator.config import load_config
from annotator.pipeline.label import LabelStage
from annotator.pipeline.rows import ROW, blank_row

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


def _labelled(stage, texts):
    """The label stage's output rows for segments with these transcripts and fixed soft tokens."""
    width = stage.prompts.table.shape[1]
    rows = []
    for k, text in enumerate(texts):
        row = blank_row()
        row.update(kind="segment", call_id="c", recording_id="r", text=text)
        row["soft"] = [0.05 * (k + 1)] * width
        rows.append(row)
    schema = ROW.append(pa.field("text", pa.string())).append(
        pa.field("soft", pa.list_(pa.float32()))
    )
    return stage(pa.Table.from_pylist(rows, schema=schema)).to_pylist()


TEXTS = ["I am so happy today", "the bus leaves at nine", "why"]


def test_label_stage_serves_the_bundles_calibration(
    small_home, lora_bundle, vllm_labeler, tmp_path
):
    """A calibrated copy of the bundle (T 2.5): the same labels, the posterior of every segment
    the uncalibrated one scaled by 1/T in log space, the confidence lower."""
    import numpy as np

    from annotator.models.bundle import Bundle, with_calibration
    from annotator.models.calibration import scaled

    calibrated = with_calibration(Bundle.load(lora_bundle), tmp_path / "cal", {"temperature": 2.5})
    served = {}
    for name, root in (("raw", lora_bundle), ("calibrated", calibrated.root)):
        config = load_config(None, models={"home": str(small_home), "bundle": str(root)})
        stage = LabelStage(config)
        stage.labeler = vllm_labeler  # the same weights as both bundles
        served[name] = _labelled(stage, TEXTS)
    raw = np.array([[p["prob"] for p in r["emotion_probs"]] for r in served["raw"]])
    cal = np.array([[p["prob"] for p in r["emotion_probs"]] for r in served["calibrated"]])
    np.testing.assert_allclose(cal, scaled(raw, 2.5), atol=1e-5)
    assert [r["emotion"] for r in served["raw"]] == [r["emotion"] for r in served["calibrated"]]
    for before, after in zip(served["raw"], served["calibrated"], strict=True):
        assert after["emotion_confidence"] < before["emotion_confidence"]


def test_label_stage_abstains_under_the_threshold_and_keeps_the_posterior(
    small_home, lora_bundle, vllm_labeler, tmp_path
):
    """models.unsure_below, else the bundle's calibrated threshold: a segment whose confidence is
    under it is written as unsure, its posterior and confidence as they were."""
    from annotator.models.bundle import Bundle, with_calibration

    def served(bundle, **models):
        config = load_config(
            None, models={"home": str(small_home), "bundle": str(bundle), **models}
        )
        stage = LabelStage(config)
        stage.labeler = vllm_labeler
        return _labelled(stage, TEXTS)

    plain = served(lora_bundle)
    confidences = sorted(r["emotion_confidence"] for r in plain)
    middle = (confidences[0] + confidences[1]) / 2  # between the lowest and the next
    for rows in (
        served(lora_bundle, unsure_below=middle),
        served(
            with_calibration(
                Bundle.load(lora_bundle),
                tmp_path / "b",
                {"temperature": 1.0, "unsure_below": middle},
            ).root
        ),
    ):
        for before, after in zip(plain, rows, strict=True):
            assert after["emotion_probs"] == before["emotion_probs"]
            unsure = before["emotion_confidence"] < middle
            assert after["emotion"] == ("unsure" if unsure else before["emotion"])
        assert sum(r["emotion"] == "unsure" for r in rows) == 1
    # The config overrides the bundle's threshold (0: never abstain).
    calibrated = tmp_path / "b"
    assert all(r["emotion"] != "unsure" for r in served(calibrated, unsure_below=0.0))
