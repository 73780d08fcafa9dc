"""Stage-by-stage throughput and peak memory, and the memory of a whole run at 1× and 10× size.

    python -m benchmarks.stages [--minutes 5] [--files 8]

Stages run one after another in this process on the same espeak-ng corpus: decode + VAD, ASR
(faster-whisper batched), features (HuBERT + EmoQ-Former + projector), label (vLLM; engine
start-up reported apart). RTFx = audio seconds / stage seconds. Then ``annotator annotate`` runs
as a subprocess over 1× and 10× the corpus while the total RSS of its whole process tree (driver,
Ray, actors, vLLM) is sampled: a flat ratio means memory does not grow with the archive.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import peak_rss_mib, write_result
from benchmarks.e2e import make_corpus


def tree_rss_mib(pid: int) -> float:
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    total = 0
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            total += proc.memory_info().rss
    return total / 1024**2


def run_peak(cmd: list[str]) -> tuple[float, float]:
    """(wall s, peak RSS of the process tree in MiB) of a command."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    peak = 0.0
    while proc.poll() is None:
        peak = max(peak, tree_rss_mib(proc.pid))
        time.sleep(0.5)
    if proc.returncode:
        raise RuntimeError(f"{cmd} exited {proc.returncode}")
    return time.perf_counter() - t0, peak


def stages(corpus: Path, audio_s: float) -> dict:
    import torch

    from annotator.audio.ingest import Segment, ingest
    from annotator.config import load_config
    from annotator.models.asr import Transcriber
    from annotator.models.bundle import Bundle
    from annotator.models.embedder import EmotionEmbedder
    from annotator.models.labeler.vllm import VLLMLabeler
    from annotator.models.profiles import resolve_model
    from annotator.models.prompt import PromptEmbedder

    config = load_config()
    home = config.models.home
    figures: dict = {}

    def done(name: str, seconds: float) -> None:
        figures[name] = {
            "seconds": round(seconds, 2),
            "rtfx": round(audio_s / seconds, 1),
            "peak_rss_mib_so_far": round(peak_rss_mib(), 1),
        }

    t0 = time.perf_counter()
    segments = [
        item
        for path in sorted(corpus.glob("*.wav"))
        for item in ingest(str(path), config.audio, config.s3)
        if isinstance(item, Segment)
    ]
    done("decode_vad", time.perf_counter() - t0)

    asr = Transcriber(resolve_model(config.models.asr.model, home), config.models.asr, 8)
    t0 = time.perf_counter()
    texts = []
    for i in range(0, len(segments), 8):
        batch = segments[i : i + 8]
        texts += [t.text for t in asr([s.audio for s in batch], [s.start_s for s in batch])]
    done("asr", time.perf_counter() - t0)

    bundle = Bundle.load(resolve_model(config.models.bundle, home))
    embedder = EmotionEmbedder(bundle, resolve_model(config.models.hubert, home))
    t0 = time.perf_counter()
    soft = []
    for i in range(0, len(segments), 8):
        soft += list(embedder([s.audio for s in segments[i : i + 8]], texts[i : i + 8])[1])
    done("features", time.perf_counter() - t0)

    llm = resolve_model(config.models.llm, home)
    prompts = PromptEmbedder.from_llm(llm, bundle.labels)
    t0 = time.perf_counter()
    labeler = VLLMLabeler(llm, bundle.emotion_token_ids, bundle.lora_dir)
    startup = time.perf_counter() - t0
    t0 = time.perf_counter()
    embeds = [prompts.build(t, v.to(torch.float32)) for t, v in zip(texts, soft, strict=True)]
    labeler.posteriors(embeds)
    done("label", time.perf_counter() - t0)
    figures["label"]["engine_startup_s"] = round(startup, 1)
    labeler.close()
    figures["segments"] = len(segments)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--files", type=int, default=8)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-stages-"))
    try:
        corpus = work / "corpus"
        audio_s = make_corpus(corpus, args.minutes, args.files)
        figures = {"audio_s": round(audio_s, 1), "stages": stages(corpus, audio_s)}
        # 1× = the first two files; 10× = twenty files of the same kind.
        big = work / "big"
        audio_10 = make_corpus(big, args.minutes / args.files * 20, 20)
        one = work / "one"
        one.mkdir()
        for path in sorted(big.glob("*.wav"))[:2]:
            shutil.copy(path, one / path.name)
        cli = [sys.executable, "-m", "annotator.cli", "annotate"]
        wall_1, peak_1 = run_peak([*cli, str(one), "--out", str(work / "out-1")])
        wall_10, peak_10 = run_peak([*cli, str(big), "--out", str(work / "out-10")])
        figures["run_memory"] = {
            "audio_s_1x": round(audio_10 / 10, 1),
            "audio_s_10x": round(audio_10, 1),
            "wall_s_1x": round(wall_1, 1),
            "wall_s_10x": round(wall_10, 1),
            "peak_tree_rss_mib_1x": round(peak_1, 1),
            "peak_tree_rss_mib_10x": round(peak_10, 1),
            "ratio": round(peak_10 / peak_1, 3),
        }
        write_result("stages", figures)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
