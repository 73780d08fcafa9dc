"""Peak RSS of decode + segment over a 1 h and a 4 h file (espeak speech with silences).

    python -m benchmarks.segment_memory [--hours 1 4]

Each length runs in a fresh subprocess so its peak RSS is its own. The goal is a flat profile:
peak(4 h) / peak(1 h) ≤ 1.1, since decoding and VAD work in bounded windows.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import write_result

LINES = [
    "Thanks for calling, how can I help you today?",
    "My internet has been down since yesterday evening.",
    "I understand, let me run a quick check on the line.",
    "This is the third time this month and I am really tired of it.",
]


def make_file(hours: float, path: Path) -> Path:
    """Write ``hours`` of speech+silence as 16 kHz 16-bit WAV, streaming (never all in memory)."""
    import wave

    from annotator.audio.synth import silence, speak

    unit = np.concatenate([np.concatenate([speak(t), silence(1.0)]) for t in LINES])
    pcm = (np.clip(unit, -1, 1) * 32767).astype("<i2").tobytes()
    total = int(hours * 3600 * 16_000)
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16_000)
        written = 0
        while written < total:
            n = min(len(unit), total - written)
            out.writeframes(pcm[: 2 * n])
            written += n
    return path


def measure(path: str) -> None:
    """Child process: ingest the file, print segments, audio seconds, seconds and peak RSS."""
    from annotator.audio.ingest import RecordingDone, Segment, ingest
    from annotator.config import AudioConfig, S3Config
    from benchmarks.common import peak_rss_mib

    start = time.perf_counter()
    n, duration = 0, 0.0
    for item in ingest(path, AudioConfig(), S3Config()):
        if isinstance(item, Segment):
            n += 1
        elif isinstance(item, RecordingDone):
            duration = item.duration_s
    wall = time.perf_counter() - start
    print(
        json.dumps(
            {"segments": n, "audio_s": duration, "wall_s": wall, "peak_rss_mib": peak_rss_mib()}
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--hours", type=float, nargs="+", default=[1.0, 4.0])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        measure(args.child)
        return
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        for hours in args.hours:
            path = make_file(hours, Path(tmp) / f"{hours}h.wav")
            out = subprocess.run(
                [sys.executable, "-m", "benchmarks.segment_memory", "--child", str(path)],
                check=True,
                capture_output=True,
                text=True,
            )
            runs[f"{hours:g}h"] = json.loads(out.stdout.strip().splitlines()[-1])
            runs[f"{hours:g}h"]["rtfx"] = (
                runs[f"{hours:g}h"]["audio_s"] / runs[f"{hours:g}h"]["wall_s"]
            )
            path.unlink()
    keys = list(runs)
    figures = {"runs": runs}
    if len(keys) >= 2:
        figures["peak_ratio_longest_over_shortest"] = (
            runs[keys[-1]]["peak_rss_mib"] / runs[keys[0]]["peak_rss_mib"]
        )
    write_result("segment_memory", figures)


if __name__ == "__main__":
    main()
