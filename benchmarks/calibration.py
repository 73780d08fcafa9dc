"""Does the posterior's confidence mean anything, and does temperature scaling fix it? EmoQ
trained briefly on the synthetic corpus (so it errs), then ``training.calibrate``: T fitted on one
held-out voice, ECE and NLL measured before and after on the other, both scored as served (vLLM).
Also the coverage and accuracy when segments under a confidence threshold are set aside, and the
threshold ``--coverage 0.8`` would store.

A short schedule (no stage 1, 3 stage-2 epochs, 2 Ray Train CPU workers) on purpose: the fully
trained small model is right on every held-out clip, where calibration has nothing to show.

    python -m benchmarks.calibration
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from benchmarks.common import write_result


def main() -> None:
    import ray

    from annotator.config import load_config
    from annotator.kinds.emoq.export import export_bundle
    from annotator.kinds.emoq.stage1 import train_stage1
    from annotator.kinds.emoq.stage2 import train_stage2
    from annotator.models.labeler.vllm import VLLMLabeler
    from training import common
    from training.calibrate import calibrate
    from training.data import read_manifest
    from training.synthetic_corpora import synthetic_corpus

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        manifest = synthetic_corpus(work / "corpus")
        config = load_config(
            None,
            train={"storage": str(work / "checkpoints"), "epochs_stage1": 0, "epochs_stage2": 3},
        )
        stage1 = train_stage1(config, manifest, work / "stage1")
        bundle = export_bundle(
            config, stage1, train_stage2(config, manifest, stage1), work / "bundle"
        )
        held_out = [e for e in read_manifest(manifest) if e.split == "test"]
        voices = sorted({e.speaker for e in held_out})
        fit = [e for e in held_out if e.speaker == voices[0]]
        check = [e for e in held_out if e.speaker == voices[1]]
        llm = common.model_path(config.models.llm, config)
        labeler = VLLMLabeler(llm, bundle.emotion_token_ids, bundle.lora_dir)
        try:
            figures = calibrate(
                config, bundle.root, fit, check, work / "calibrated", None, labeler, coverage=0.8
            )
        finally:
            labeler.close()
    ray.shutdown()

    def rounded(value):
        if isinstance(value, float):
            return round(value, 4)
        if isinstance(value, dict):
            return {k: rounded(v) for k, v in value.items()}
        if isinstance(value, list):
            return [rounded(v) for v in value]
        return value

    result = {
        "schedule": "no stage 1, 3 stage-2 epochs",
        "fit_voice": voices[0],
        "check_voice": voices[1],
        "temperature": round(figures["temperature"], 3),
        "fit": rounded(figures["fit"]),
        "check": rounded(figures["check"]),
        "unsure_below_for_coverage_0.8": rounded(figures["unsure_below"]),
        "coverage_at_that_threshold": rounded(figures["coverage"]),
    }
    print(result, flush=True)
    write_result("calibration", result)


if __name__ == "__main__":
    main()
