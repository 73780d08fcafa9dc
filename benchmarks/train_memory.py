"""Training memory benchmark (Qieemo, whose trainer reads and encodes each batch as it is drawn):

* the synthetic prosody-only corpus, 8 epochs as ``benchmarks/kinds.py`` trains it, features
  streamed (``train.features: stream``) and held (``memory``, the earlier trainer's way), in the
  same run, three training seeds each: held-out UA of each run (48 clips: one clip is 0.021);
* the same manifest 1× and 10× as long (its train split repeated), 2 epochs each, both ways, and
  1× for 20 epochs (as many steps as 10× for 2): a worker's peak RSS (``worker_peak_rss_mib`` in
  the run's progress.json, rank 0);
* 200 segments cut from two 1-hour sources (synthetic clips laid end to end with silence
  between): a worker's peak RSS and decodes per source per epoch, beside what the earlier rule
  (decode the whole source whenever the next example's source differs, in the shuffled share's
  order) would have done on the same share.

    python -m benchmarks.train_memory
"""

from __future__ import annotations

import json
import random
import tempfile
import time
import wave
from dataclasses import replace
from pathlib import Path

import numpy as np

from benchmarks.common import write_result

SEEDS = (0, 1, 2)  # the held-out UA of each way, per training seed (48 held-out clips)


def _progress(storage: Path, name: str) -> dict:
    from training.common import latest_checkpoint

    return json.loads((Path(latest_checkpoint(str(storage), name)) / "progress.json").read_text())


def _long_sources(corpus: Path, work: Path, hours: float = 1.0, per_source: int = 100):
    """Two sources of ``hours`` each: the corpus's train clips laid end to end (0.5 s of silence
    between), repeated until the hour is full; ``per_source`` segments of each, spread over it."""
    from training.data import Example, load_audio, read_manifest

    train = [e for e in read_manifest(corpus) if e.split == "train"]
    clips = [(e, load_audio(e)) for e in train]
    gap = np.zeros(8_000, np.float32)
    examples = []
    for s in range(2):
        path = work / f"long-{s}.wav"
        total = int(hours * 3600 * 16_000)
        placed, position = [], 0
        with wave.open(str(path), "wb") as out:
            out.setnchannels(1)
            out.setsampwidth(2)
            out.setframerate(16_000)
            k = s
            while position + len(clips[k % len(clips)][1]) + len(gap) < total:
                example, audio = clips[k % len(clips)]
                placed.append((position, position + len(audio), example))
                pcm = (np.concatenate([audio, gap]) * 32767).clip(-32768, 32767)
                out.writeframes(pcm.astype(np.int16).tobytes())
                position += len(audio) + len(gap)
                k += 1
            out.writeframes(np.zeros(total - position, np.int16).tobytes())
        for a, b, example in placed[:: max(1, len(placed) // per_source)][:per_source]:
            examples.append(
                Example(
                    str(path),
                    example.transcript,
                    example.label,
                    start_s=a / 16_000,
                    end_s=b / 16_000,
                    split="train",
                )
            )
    return examples


def _earlier_rule_decodes(examples, workers: int, seed: int) -> dict[str, int]:
    """Whole-source decodes the earlier load_audios made over each worker's shuffled share:
    one each time the next example's source differs from the last one's."""
    from collections import Counter

    from training.common import shard_indices

    counts: Counter[str] = Counter()
    for rank in range(workers):
        last = None
        for i in shard_indices(len(examples), rank, workers, seed):
            if examples[i].audio_uri != last:
                counts[Path(examples[i].audio_uri).name] += 1
                last = examples[i].audio_uri
    return dict(counts)


def main() -> None:
    import ray

    from annotator.config import load_config
    from annotator.kinds.qieemo.train import train_qieemo
    from annotator.models.profiles import resolve_model
    from benchmarks.kinds import _score
    from training.data import read_manifest, write_manifest
    from training.synthetic_corpora import synthetic_corpus

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    figures: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        prosody = synthetic_corpus(work / "prosody", carries="prosody")
        examples = read_manifest(prosody)
        held_out = [e for e in examples if e.split == "test"]

        def config(epochs: int, features: str = "stream", seed: int = 0):
            train = {
                "storage": str(work / "checkpoints"),
                "epochs_stage2": epochs,
                "keep_checkpoints": 1,
                "features": features,
                "seed": seed,
            }
            return load_config(None, train=train)

        start = Path(resolve_model("small:qieemo-bundle", config(1).models.home))
        for features in ("stream", "memory"):
            runs = []
            for seed in SEEDS:
                t0 = time.perf_counter()
                name = f"ua-{features}-{seed}"
                bundle = train_qieemo(config(8, features, seed), prosody, start, work / name, name)
                runs.append(
                    {
                        "seed": seed,
                        "train_s": round(time.perf_counter() - t0),
                        "held_out": _score(config(8), bundle.root, held_out),
                    }
                )
                print(features, runs[-1], flush=True)
            uas = [r["held_out"]["ua"] for r in runs]
            figures[f"prosody_8_epochs_{features}"] = {
                "runs": runs,
                "ua_mean": round(float(np.mean(uas)), 3),
                "ua_min_max": [min(uas), max(uas)],
            }
        figures["kinds_json_in_memory_trainer"] = json.loads(
            Path("benchmarks/results/kinds.json").read_text()
        )["kinds"]["qieemo"]["prosody_corpus"]
        train = [e for e in examples if e.split == "train"]
        # 1x and 10x the manifest, 2 epochs; 1x for 20 epochs takes as many steps as 10x for 2,
        # so it tells growth with the data from growth with the steps.
        for features, times, epochs in (
            ("stream", 1, 2),
            ("stream", 10, 2),
            ("stream", 1, 20),
            ("memory", 1, 2),
            ("memory", 10, 2),
        ):
            name = f"{features}-x{times}-e{epochs}"
            manifest = work / f"x{times}.jsonl"
            write_manifest([*train * times, *held_out], manifest)
            t0 = time.perf_counter()
            train_qieemo(config(epochs, features), manifest, start, work / name, name)
            figures[name] = {
                "train_examples": len(train) * times,
                "epochs": epochs,
                "train_s": round(time.perf_counter() - t0),
                "worker_peak_rss_mib": _progress(work / "checkpoints", name)["worker_peak_rss_mib"],
            }
            print(name, figures[name], flush=True)
        for features in ("stream", "memory"):
            figures[f"peak_rss_ratio_x10_x1_{features}"] = round(
                figures[f"{features}-x10-e2"]["worker_peak_rss_mib"]
                / figures[f"{features}-x1-e2"]["worker_peak_rss_mib"],
                3,
            )
        long = _long_sources(prosody, work)
        random.Random(0).shuffle(long)
        manifest = work / "long.jsonl"
        write_manifest([*long, *held_out], manifest)
        cfg = config(1)
        t0 = time.perf_counter()
        train_qieemo(cfg, manifest, start, work / "long", "long")
        progress = _progress(work / "checkpoints", "long")
        figures["two_1h_sources_200_segments"] = {
            "train_s": round(time.perf_counter() - t0),
            "worker_peak_rss_mib": progress["worker_peak_rss_mib"],
            # rank 0: its statistics pass and one epoch, each reading each source once
            "rank0_source_decodes": progress["source_decodes"],
            "rank0_decodes_per_source_per_pass": progress["source_decodes"] / (2 * 2),
            "earlier_rule_whole_source_decodes_per_worker_pass": _earlier_rule_decodes(
                [replace(e) for e in long], cfg.train.num_workers, cfg.train.seed
            ),
        }
        print(figures["two_1h_sources_200_segments"], flush=True)
    ray.shutdown()
    write_result("train_memory", {"kind": "qieemo", "workers": 2, **figures})


if __name__ == "__main__":
    main()
