"""Every bundle kind trained on the synthetic corpus and scored on its two held-out voices, the
speed of its emotion stages, and its parameters at small and at paper size: the README's kinds
table.

    python -m benchmarks.kinds [--epochs 8]

Each kind starts from the small profile and trains on Ray Train (2 CPU workers, global batch 8)
for ``--epochs`` epochs of stage 2's schedule: EmoQ after 3 stage-1 epochs (MAL), EmoSLLM (mapper
+ LoRA) and Qieemo (encoder frozen) in one stage. EmoQ and EmoSLLM hear the corpus where wording
and prosody carry the emotion; Qieemo hears no transcript, so it is scored on the prosody-only
corpus (the same neutral sentences for every emotion) and, for comparison, on the first one.

RTFx = held-out audio seconds / the seconds ``training.evaluate.posteriors`` takes over them: the
kind's emotion stages as served (models loaded inside; the vLLM engine started before and not
counted), one process on this machine's CPUs.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from benchmarks.common import write_result


def _score(config, bundle_dir: Path, held_out, labeler=None) -> dict:
    from annotator.models.bundle import Bundle
    from training.data import load_audios
    from training.evaluate import posteriors
    from training.metrics import scores

    bundle = Bundle.load(bundle_dir)
    audio_s = sum(len(a) for a in load_audios(held_out, config.s3, config.audio)) / 16_000
    t0 = time.perf_counter()
    probs, _ = posteriors(config, bundle_dir, held_out, labeler)
    seconds = time.perf_counter() - t0
    truth = [bundle.labels.index(e.label) for e in held_out]
    got = scores(truth, probs.argmax(axis=1).tolist(), len(bundle.labels))
    return {
        "examples": len(held_out),
        "ua": round(got["ua"], 3),
        "wf1": round(got["wf1"], 3),
        "wa": round(got["wa"], 3),
        "audio_s": round(audio_s, 1),
        "rtfx": round(audio_s / seconds, 1),
    }


def _served(config, bundle_dir: Path, held_out) -> dict:
    from annotator.models.bundle import Bundle
    from annotator.models.labeler.vllm import VLLMLabeler
    from training import common

    bundle = Bundle.load(bundle_dir)
    llm = common.model_path(config.models.llm, config)
    labeler = VLLMLabeler(llm, bundle.emotion_token_ids, bundle.lora_dir, bundle.lora_rank)
    try:
        return _score(config, bundle_dir, held_out, labeler)
    finally:
        labeler.close()


def main() -> None:
    import ray

    from annotator.config import load_config
    from annotator.kinds.emoq.export import export_bundle
    from annotator.kinds.emoq.stage1 import train_stage1
    from annotator.kinds.emoq.stage2 import train_stage2
    from annotator.kinds.emosllm.train import train_emosllm
    from annotator.kinds.qieemo.train import train_qieemo
    from annotator.models.kind_parameters import paper_parameters, small_parameters
    from annotator.models.profiles import resolve_model
    from training.data import read_manifest
    from training.synthetic_corpora import synthetic_corpus

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=8)
    args = parser.parse_args()

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    kinds: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        both = synthetic_corpus(work / "both")
        prosody = synthetic_corpus(work / "prosody", carries="prosody")
        config = load_config(
            None,
            train={
                "storage": str(work / "checkpoints"),
                "epochs_stage1": 3,
                "epochs_stage2": args.epochs,
                "keep_checkpoints": 1,
            },
        )
        home = config.models.home
        held_out = {m: [e for e in read_manifest(m) if e.split == "test"] for m in (both, prosody)}

        t0 = time.perf_counter()
        stage1 = train_stage1(config, both, work / "stage1")
        emoq = export_bundle(config, stage1, train_stage2(config, both, stage1), work / "emoq")
        kinds["emoq"] = {
            "train_s": round(time.perf_counter() - t0),
            "corpus": _served(config, emoq.root, held_out[both]),
        }

        t0 = time.perf_counter()
        start = Path(resolve_model("small:emosllm-bundle", home))
        emosllm = train_emosllm(config, both, start, work / "emosllm")
        kinds["emosllm"] = {
            "train_s": round(time.perf_counter() - t0),
            "corpus": _served(config, emosllm.root, held_out[both]),
        }

        start = Path(resolve_model("small:qieemo-bundle", home))
        t0 = time.perf_counter()
        qieemo = train_qieemo(config, prosody, start, work / "qieemo-prosody", "qieemo-prosody")
        kinds["qieemo"] = {
            "train_s": round(time.perf_counter() - t0),
            "train_accuracy": qieemo.extra.get("train_accuracy"),
            "prosody_corpus": _score(config, qieemo.root, held_out[prosody]),
        }
        again = train_qieemo(config, both, start, work / "qieemo-both", "qieemo-both")
        kinds["qieemo"]["corpus"] = _score(config, again.root, held_out[both])
    ray.shutdown()

    small, paper = small_parameters(Path(home) / "small"), paper_parameters()
    for name, figures in kinds.items():
        figures["parameters_small"] = {**small[name], "total": sum(small[name].values())}
        figures["parameters_paper"] = {**paper[name], "total": sum(paper[name].values())}
    result = {"epochs": args.epochs, "workers": 2, "kinds": kinds}
    write_result("kinds", result)
    for name, figures in kinds.items():
        scored = figures.get("corpus", {})
        print(
            f"{name:8} UA {scored.get('ua')} WF1 {scored.get('wf1')} RTFx {scored.get('rtfx')} "
            f"params small {figures['parameters_small']['total']:,} "
            f"paper {figures['parameters_paper']['total']:,}"
        )


if __name__ == "__main__":
    main()
