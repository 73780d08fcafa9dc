"""End-to-end throughput of `annotate` vs faster-whisper's own batched pipeline alone.

    python -m benchmarks.e2e [--minutes 10] [--files 20] [--result e2e]

Same audio (espeak-ng speech with pauses, as WAV files), same model (the small profile's Whisper
tiny.en, int8), same beam size, batch size and CTranslate2 threads. Figures, in audio seconds
per wall second:

* ``whisper_alone``: ``BatchedInferencePipeline.transcribe`` (with its own VAD) file after file;
* ``annotate_total``: the whole ``annotate`` run, Ray start-up and vLLM start-up included;
* ``annotate_marginal``: (audio of the full corpus − audio of its first third) / (wall of the
  full run − wall of the one-third run): the rate an overnight run over a large archive settles
  at, with the start-up (Ray, model loads, vLLM) cancelled out.

Where the time goes: CPU seconds of faster-whisper alone (``whisper_alone_cpu_s``) and of the
whole ``annotate`` run per stage (``annotate_cpu_s_by_stage``: decode, ASR, features, label,
the driver, Ray's own processes; ``benchmarks.common.StageSampler``). On a machine of few cores
the run is CPU-bound, and the ratio is about the CPU seconds of whisper alone over the run's.

The goal is annotate_marginal / whisper_alone ≥ 0.8: transcription dominates and the emotion
stages cost a few percent on top.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import StageSampler, peak_rss_mib, write_result

LINES = [
    "Thanks for calling, how can I help you today?",
    "My internet has been down since yesterday evening.",
    "I understand, let me run a quick check on the line.",
    "This is the third time this month and I am really tired of it.",
    "The weather is lovely today and I feel great.",
    "Please send the invoice by Friday morning.",
]


def make_corpus(root: Path, minutes: float, files: int) -> float:
    from annotator.audio.synth import encode, silence, speak

    pieces = [np.concatenate([speak(t), silence(0.8)]) for t in LINES]
    per_file = minutes * 60 / files
    total = 0.0
    for i in range(files):
        chunks, length = [], 0.0
        k = i
        while length < per_file:
            chunks.append(pieces[k % len(pieces)])
            length += len(chunks[-1]) / 16_000
            k += 1
        audio = np.concatenate(chunks)
        encode(audio, root / f"call-{i:03d}.wav")
        total += len(audio) / 16_000
    return total


def whisper_alone(root: Path, config) -> tuple[float, float]:
    """(wall s, CPU s) of faster-whisper's batched pipeline over the corpus, file after file."""
    from faster_whisper import BatchedInferencePipeline, WhisperModel

    from annotator.audio.decode import decode_bytes
    from annotator.models.asr import cpu_threads
    from annotator.models.profiles import resolve_model

    asr = config.models.asr
    model = WhisperModel(
        resolve_model(asr.model, config.models.home),
        device=asr.device,
        compute_type=asr.compute_type,
        cpu_threads=cpu_threads(asr),
    )
    pipeline = BatchedInferencePipeline(model)
    t0, cpu0 = time.perf_counter(), cpu_s()
    for path in sorted(root.glob("*.wav")):
        audio = decode_bytes(path.read_bytes())
        segments, _ = pipeline.transcribe(
            audio,
            language="en",
            beam_size=asr.beam_size,
            batch_size=config.stages.asr.batch_size,
            word_timestamps=True,
        )
        list(segments)
    return time.perf_counter() - t0, cpu_s() - cpu0


def cpu_s() -> float:
    """CPU seconds of this process so far, every thread (CTranslate2's included)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def annotate_runs(config, corpus: Path, work: Path) -> dict:
    """Ray started, then ``annotate`` over the first third of the corpus's files, then over all
    of them with a :class:`StageSampler` running: wall, audio seconds, the marginal rate and the
    start-up estimate (both runs start their actors and engines; neither starts Ray), CPU
    seconds per stage of the whole run, and its summary."""
    from annotator.pipeline.connection import connect
    from annotator.pipeline.run import annotate

    connect(config)

    def run(files: list[Path], out: str) -> tuple[float, object]:
        t0 = time.perf_counter()
        summary = annotate(config.model_copy(update={"output": out}), [str(f) for f in files])
        return time.perf_counter() - t0, summary

    files = sorted(corpus.glob("*.wav"))
    third_s, third = run(files[: max(1, len(files) // 3)], str(work / "out-third"))
    with StageSampler() as sampler:
        total_s, summary = run(files, str(work / "out-full"))
    full_audio, third_audio = summary.counts.audio_s, third.counts.audio_s
    marginal = (full_audio - third_audio) / (total_s - third_s)
    return {
        "annotate_wall_s": round(total_s, 2),
        "annotate_third_wall_s": round(third_s, 2),
        "annotate_marginal_audio_s_per_s": round(marginal, 2),
        "startup_s_estimate": round(total_s - full_audio / marginal, 1),
        "annotate_cpu_s_by_stage": sampler.cpu_s(),
        "gpu_peak_mib_by_stage": sampler.gpu_peak_mib,
        "gpu_used_peak_mib": sampler.gpu_used_peak_mib,
        "segments": summary.counts.segments,
        "placement": summary.counts.placement,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--files", type=int, default=20)
    parser.add_argument("--result", default="e2e", help="name of the JSON in benchmarks/results")
    args = parser.parse_args()

    from annotator.config import load_config
    from annotator.models.asr import cpu_threads

    work = Path(tempfile.mkdtemp(prefix="bench-e2e-"))
    try:
        corpus = work / "corpus"
        audio_s = make_corpus(corpus, args.minutes, args.files)
        config = load_config(None, output=str(work / "out"))
        alone_s, alone_cpu_s = whisper_alone(corpus, config)
        runs = annotate_runs(config, corpus, work)
        alone = audio_s / alone_s
        total_rate = audio_s / runs["annotate_wall_s"]
        figures = {
            "audio_s": round(audio_s, 1),
            "files": args.files,
            "asr": config.models.asr.model_dump(),
            "asr_cpu_threads": cpu_threads(config.models.asr),
            "asr_batch_size": config.stages.asr.batch_size,
            "whisper_alone_wall_s": round(alone_s, 2),
            "whisper_alone_cpu_s": round(alone_cpu_s, 1),
            "whisper_alone_audio_s_per_s": round(alone, 2),
            **{k: v for k, v in runs.items() if not k.startswith("gpu_") and k != "placement"},
            "annotate_total_audio_s_per_s": round(total_rate, 2),
            "annotate_cpu_s": round(
                sum(v for k, v in runs["annotate_cpu_s_by_stage"].items() if k != "sampler"), 1
            ),
            "ratio_marginal": round(runs["annotate_marginal_audio_s_per_s"] / alone, 3),
            "ratio_total": round(total_rate / alone, 3),
            "driver_peak_rss_mib": round(peak_rss_mib(), 1),
        }
        write_result(args.result, figures)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
