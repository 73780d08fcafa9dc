"""Stage-by-stage throughput and peak memory, and the memory of a whole run at 1× and 10× size.

    python -m benchmarks.stages [--minutes 5] [--files 8]

The pipeline's stage classes run one after another in this process on the same espeak-ng corpus:
decode + VAD + packing into ASR windows, ASR (faster-whisper, windows batched), features
(HuBERT + EmoQ-Former + projector), label (vLLM; engine start-up reported apart). RTFx = audio
seconds / stage seconds. Then ``annotator annotate`` runs as a subprocess over 1× and 10× the
corpus while the memory of its whole process tree (driver, Ray, actors, vLLM) is sampled as
summed PSS (shared pages counted once): a flat ratio means memory does not grow with the
archive.
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


def tree_memory_mib(pid: int) -> tuple[float, float]:
    """(RSS summed, PSS summed) over a process and its descendants, in MiB.

    RSS counts a shared page (Ray's object store, mapped by every worker that reads an object;
    shared libraries) once per process that touched it; PSS divides it among them, so the PSS sum
    is the memory the tree really holds."""
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0, 0.0
    rss = pss = 0
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            info = proc.memory_full_info()
            rss += info.rss
            pss += info.pss
    return rss / 1024**2, pss / 1024**2


def run_peak(cmd: list[str]) -> tuple[float, float, float]:
    """(wall s, peak summed RSS MiB, peak summed PSS MiB) of a command's process tree."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    peak_rss = peak_pss = 0.0
    while proc.poll() is None:
        rss, pss = tree_memory_mib(proc.pid)
        peak_rss, peak_pss = max(peak_rss, rss), max(peak_pss, pss)
        time.sleep(0.5)
    if proc.returncode:
        raise RuntimeError(f"{cmd} exited {proc.returncode}")
    return time.perf_counter() - t0, peak_rss, peak_pss


def stages(corpus: Path, audio_s: float) -> dict:
    """The pipeline's own stage classes, one after another in this process, on Arrow batches
    of the configured sizes (model loading not timed)."""
    import pyarrow as pa

    from annotator.config import load_config
    from annotator.kinds.emoq.stage import FeaturesStage
    from annotator.pipeline.label import LabelStage
    from annotator.pipeline.rows import ROW
    from annotator.pipeline.stages import ASRStage
    from annotator.pipeline.windows import ingest_rows

    config = load_config()
    figures: dict = {}

    def done(name: str, seconds: float) -> None:
        figures[name] = {
            "seconds": round(seconds, 2),
            "rtfx": round(audio_s / seconds, 1),
            "peak_rss_mib_so_far": round(peak_rss_mib(), 1),
        }

    def batches(table: pa.Table, size: int) -> list[pa.Table]:
        return [table.slice(i, size) for i in range(0, table.num_rows, size)]

    t0 = time.perf_counter()
    rows = [row for path in sorted(corpus.glob("*.wav")) for row in ingest_rows(str(path), config)]
    done("decode_vad", time.perf_counter() - t0)
    windows = pa.Table.from_pylist([r for r in rows if r["kind"] == "window"], schema=ROW)

    asr = ASRStage(config)
    t0 = time.perf_counter()
    segments = pa.concat_tables(
        [asr(batch) for batch in batches(windows, config.stages.asr.batch_size)]
    )
    done("asr", time.perf_counter() - t0)
    figures["asr"]["windows"] = windows.num_rows

    features = FeaturesStage(config)
    t0 = time.perf_counter()
    soft = pa.concat_tables(
        [features(batch) for batch in batches(segments, config.stages.features.batch_size)]
    )
    done("features", time.perf_counter() - t0)

    label = LabelStage(config)
    t0 = time.perf_counter()
    label._engine()
    startup = time.perf_counter() - t0
    t0 = time.perf_counter()
    for batch in batches(soft, config.stages.label.batch_size):
        label(batch)
    done("label", time.perf_counter() - t0)
    figures["label"]["engine_startup_s"] = round(startup, 1)
    label.labeler.close()
    figures["segments"] = segments.num_rows
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
        wall_1, rss_1, pss_1 = run_peak([*cli, str(one), "--out", str(work / "out-1")])
        wall_10, rss_10, pss_10 = run_peak([*cli, str(big), "--out", str(work / "out-10")])
        figures["run_memory"] = {
            "audio_s_1x": round(audio_10 / 10, 1),
            "audio_s_10x": round(audio_10, 1),
            "wall_s_1x": round(wall_1, 1),
            "wall_s_10x": round(wall_10, 1),
            "peak_tree_pss_mib_1x": round(pss_1, 1),
            "peak_tree_pss_mib_10x": round(pss_10, 1),
            "ratio": round(pss_10 / pss_1, 3),
            "peak_tree_rss_sum_mib_1x": round(rss_1, 1),
            "peak_tree_rss_sum_mib_10x": round(rss_10, 1),
        }
        write_result("stages", figures)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
