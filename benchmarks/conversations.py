"""Context against no context: MiSTER-E and the per-segment EmoQ bundle trained on the same
synthetic calls whose emotion depends on context, scored on the calls of two held-out voices.

    python -m benchmarks.conversations [--per-pair 2]

The corpus (``training.synthetic_corpora.synthetic_conversations``): two-speaker calls, one
voice per channel, six turns; in a call of emotion E the first four turns say E's sentences with E's prosody and the
last two are neutral sentences said neutrally, still labelled E. Each turn alone therefore tops
out near UA 0.75 (a neutral-sounding tail cannot be told from a neutral call).

* EmoQ: stage 1 (3 epochs, MAL) and stage 2 (8 epochs) on every training turn as an utterance
  of its own, served per segment by vLLM (``training.evaluate.posteriors``, as in
  benchmarks/kinds.py).
* MiSTER-E: ``annotator train mister-e``'s two stages (10 + 20 epochs), scored with context (the
  context model over each call, both channels in time order, in serving's windows) and without
  (its own stage-1 heads on each turn alone): ``annotator.kinds.mister_e.train.score``.

Both on Ray Train with 2 CPU workers, global batch 8. Writes results/conversations.json.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from benchmarks.common import write_result
from benchmarks.kinds import _served


def _rounded(scores: dict) -> dict:
    return {k: round(v, 3) for k, v in scores.items()}


def main() -> None:
    import ray

    from annotator.config import load_config
    from annotator.kinds.emoq.export import export_bundle
    from annotator.kinds.emoq.stage1 import train_stage1
    from annotator.kinds.emoq.stage2 import train_stage2
    from annotator.kinds.mister_e.train import score, train_mister_e
    from annotator.models.profiles import resolve_model
    from training.data import read_manifest
    from training.synthetic_corpora import synthetic_conversations

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-pair", type=int, default=2)
    args = parser.parse_args()

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        calls = synthetic_conversations(work / "calls", per_pair=args.per_pair)
        train_calls = len({e.audio_uri for e in read_manifest(calls) if e.split == "train"})
        held_out = [e for e in read_manifest(calls) if e.split == "test"]
        storage = str(work / "checkpoints")
        emoq_config = load_config(
            None,
            train={
                "storage": storage,
                "epochs_stage1": 3,
                "epochs_stage2": 8,
                "keep_checkpoints": 1,
            },
        )
        t0 = time.perf_counter()
        stage1 = train_stage1(emoq_config, calls, work / "stage1")
        emoq = export_bundle(
            emoq_config, stage1, train_stage2(emoq_config, calls, stage1), work / "emoq"
        )
        emoq_train_s = time.perf_counter() - t0
        emoq_scores = _served(emoq_config, emoq.root, held_out)

        config = load_config(
            None,
            train={
                "storage": storage,
                "epochs_stage1": 10,
                "epochs_stage2": 20,
                "lr_stage1": 1e-3,
                "keep_checkpoints": 1,
            },
        )
        t0 = time.perf_counter()
        start = Path(resolve_model("small:mister-e-bundle", config.models.home))
        mister_e = train_mister_e(config, calls, start, work / "mister-e")
        mister_e_train_s = time.perf_counter() - t0
        scored = score(mister_e.root, calls, config, "test")
    ray.shutdown()

    result = {
        "corpus": {
            "train_calls": train_calls,
            "held_out_turns": scored["utterances"],
            "held_out_calls": scored["conversations"],
            "per_pair": args.per_pair,
        },
        "emoq_per_segment": {"train_s": round(emoq_train_s), **emoq_scores},
        "mister_e": {
            "train_s": round(mister_e_train_s),
            "context": _rounded(scored["context"]),
            "each_turn_alone": _rounded(scored["utterance_alone"]),
        },
    }
    write_result("conversations", result)
    print(
        f"held-out UA: EmoQ per segment {emoq_scores['ua']}, MiSTER-E with context "
        f"{result['mister_e']['context']['ua']}, MiSTER-E each turn alone "
        f"{result['mister_e']['each_turn_alone']['ua']}"
    )


if __name__ == "__main__":
    main()
