"""Which input path does the model learn from? EmoQ trained on two synthetic corpora that separate
them — prosody only (the same neutral sentences for every emotion; pitch, rate and loudness carry
it, shifted per voice) and wording only (every sentence spoken with neutral prosody) — and on the
corpus where both carry it, then scored on the held-out voices as served (vLLM), whole and with one path taken away: the audio
(silence of the same length) or the transcript (blank).

A model that uses a path loses accuracy when it is taken away; chance is UA 0.25. Training as
tests/training/test_retrain.py does (small profile, 2 Ray Train CPU workers, 10 + 12 epochs).

    python -m benchmarks.paths [--corpora prosody,wording,both] [--seed 0] [--standardise-frames]
        [--result paths]
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from benchmarks.common import write_result


def main() -> None:
    import argparse

    import ray

    from annotator.config import load_config
    from annotator.kinds.emoq.export import export_bundle
    from annotator.kinds.emoq.stage1 import train_stage1
    from annotator.kinds.emoq.stage2 import train_stage2
    from annotator.models.labeler.vllm import VLLMLabeler
    from training import common
    from training.data import read_manifest
    from training.evaluate import evaluate
    from training.synthetic_corpora import synthetic_corpus

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpora", default="prosody,wording,both")
    parser.add_argument("--seed", type=int, default=0, help="train.seed")
    parser.add_argument(
        "--standardise-frames", action="store_true", help="train.standardise_frames: true"
    )
    parser.add_argument("--result", default="paths", help="benchmarks/results/<result>.json")
    args = parser.parse_args()
    corpora = args.corpora.split(",")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for carries in corpora:
            work = Path(tmp) / carries
            manifest = synthetic_corpus(work / "corpus", carries=carries)
            config = load_config(
                None,
                train={
                    "storage": str(work / "checkpoints"),
                    "epochs_stage1": 10,
                    "epochs_stage2": 12,
                    "seed": args.seed,
                    "standardise_frames": args.standardise_frames,
                },
            )
            t0 = time.perf_counter()
            stage1 = train_stage1(config, manifest, work / "stage1")
            checkpoint = train_stage2(config, manifest, stage1)
            bundle = export_bundle(config, stage1, checkpoint, work / "bundle")
            train_s = time.perf_counter() - t0
            held_out = [e for e in read_manifest(manifest) if e.split == "test"]
            llm = common.model_path(config.models.llm, config)
            labeler = VLLMLabeler(llm, bundle.emotion_token_ids, bundle.lora_dir)
            try:
                scored = {
                    name: evaluate(config, bundle.root, held_out, None, labeler, ablate)
                    for name, ablate in (("full", None), ("no_audio", "audio"), ("no_text", "text"))
                }
            finally:
                labeler.close()
            results[carries] = {
                "held_out_examples": len(held_out),
                "train_s": round(train_s, 1),
                **{
                    name: {k: round(r[k], 3) for k in ("ua", "wa", "wf1")}
                    for name, r in scored.items()
                },
            }
            print(carries, results[carries], flush=True)
    ray.shutdown()
    write_result(
        args.result,
        {
            "chance_ua": 0.25,
            "seed": args.seed,
            "standardise_frames": args.standardise_frames,
            "corpora": results,
        },
    )


if __name__ == "__main__":
    main()
