"""One long archive decoded by many tasks against one: a tar of ``--members`` WAV members of
``--minutes`` each (4 hours by default), through the graph's decode part (listing → decode →
members decoded apart; ``graph.decoded``) on a Ray local cluster of this machine's CPUs.

    python -m benchmarks.archive_decode [--members 48] [--minutes 5]

Each member is espeak-ng speech (sentences with pauses) tiled to its length. Both ways decode,
segment (Silero VAD) and pack the same windows; the JSON has the wall time of each, their ratio,
how many tasks each decode operator ran (Ray Data's stats) and the windows produced. This
machine has 2 cores: two tasks at once is its ceiling.
"""

from __future__ import annotations

import argparse
import re
import tarfile
import tempfile
import time
from pathlib import Path

from benchmarks.common import write_result


def build_archive(root: Path, members: int, minutes: float) -> tuple[Path, float]:
    import numpy as np

    from annotator.audio.synth import SAMPLE_RATE, encode, silence, speak
    from tests.factories import SENTENCES

    clip = np.concatenate([np.concatenate([speak(s), silence(1.0)]) for s in SENTENCES])
    samples = int(minutes * 60 * SAMPLE_RATE)
    audio = np.tile(clip, samples // len(clip) + 1)[:samples]
    path = root / "night.tar"
    with tarfile.open(path, "w") as tar:
        for k in range(members):
            wav = encode(np.roll(audio, k * SAMPLE_RATE), root / f"call-{k:03d}.wav")
            tar.add(wav, arcname=f"calls/call-{k:03d}.wav")
            wav.unlink()
    return path, members * samples / SAMPLE_RATE


def tasks(stats: str) -> dict[str, int]:
    pattern = r"Operator \d+ [^:]*?\b(decode_members|decode)\b[^:]*: (\d+) tasks"
    return {op: int(n) for op, n in re.findall(pattern, stats)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=48)
    parser.add_argument("--minutes", type=float, default=5)
    args = parser.parse_args()

    import ray

    from annotator.config import default_home, load_config
    from annotator.models.profiles import build_small_profile
    from annotator.pipeline.graph import decoded

    home = build_small_profile(default_home()).parent
    config = load_config(None, models={"home": str(home)})
    result: dict = {"members": args.members, "minutes_each": args.minutes}
    with tempfile.TemporaryDirectory() as tmp:
        archive, audio_s = build_archive(Path(tmp), args.members, args.minutes)
        result["audio_h"] = audio_s / 3600
        result["archive_mib"] = archive.stat().st_size / 2**20
        ray.init(include_dashboard=False, log_to_driver=False)
        try:
            for name, apart in (("one_task", False), ("members_apart", True)):
                ds = decoded(config, [str(archive)], members_apart=apart)
                t = time.perf_counter()
                windows = sum(
                    int((b["kind"].to_numpy(zero_copy_only=False) == "window").sum())
                    for b in ds.iter_batches(batch_format="pyarrow", batch_size=None)
                )
                result[f"{name}_wall_s"] = time.perf_counter() - t
                result[f"{name}_windows"] = windows
                result[f"{name}_tasks"] = tasks(ds.stats())
        finally:
            ray.shutdown()
    result["same_windows"] = result["one_task_windows"] == result["members_apart_windows"]
    result["one_task_over_members_apart"] = (
        result["one_task_wall_s"] / result["members_apart_wall_s"]
    )
    write_result("archive_decode", result)


if __name__ == "__main__":
    main()
