"""Export benchmark: `annotator query … --format parquet|csv|json --output FILE` of every segment
of an output of 1,000 input files and of 100,000 (≈ 60 k and ≈ 6 M rows, written through the
real sink as benchmarks/query.py writes them, then compacted), each export in a fresh process:
its peak RSS (the kernel's ru_maxrss for that process) and wall time. The export streams DuckDB's
record batches (annotator/query/cli.py), so the peak should not grow with the rows.

    python -m benchmarks.query_export [--small 1000] [--large 100000]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import write_result
from benchmarks.query import write_output

EXPORT = "SELECT * FROM segments"
FORMATS = ("parquet", "csv", "json")


def _export(output: str, fmt: str, dest: Path) -> dict:
    """One export in a fresh process: (peak RSS MiB, seconds, bytes written)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "annotator.cli",
            "query",
            output,
            EXPORT,
            "--format",
            fmt,
            "--output",
            str(dest),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"export {fmt} failed: {proc.stderr.read().decode()[-2000:]}")
    return {
        "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),
        "seconds": round(seconds, 1),
        "bytes": dest.stat().st_size,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=1_000)
    parser.add_argument("--large", type=int, default=100_000)
    args = parser.parse_args()

    from annotator.output.compact import compact

    sizes: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for files in (args.small, args.large):
            output = f"{tmp}/out-{files}"
            counts, write_s = write_output(output, files)
            compact(output, retain_hours=0)
            runs = {fmt: _export(output, fmt, Path(tmp) / f"e-{files}.{fmt}") for fmt in FORMATS}
            for path in Path(tmp).glob(f"e-{files}.*"):
                path.unlink()
            sizes[str(files)] = {"segments": counts.segments, "write_s": round(write_s, 1), **runs}
            print(files, sizes[str(files)], flush=True)
    small, large = sizes[str(args.small)], sizes[str(args.large)]
    write_result(
        "query_export",
        {
            "query": EXPORT,
            "outputs": sizes,
            "rows_ratio": round(large["segments"] / small["segments"], 1),
            "peak_rss_ratio": {
                fmt: round(large[fmt]["peak_rss_mib"] / small[fmt]["peak_rss_mib"], 3)
                for fmt in FORMATS
            },
            "goal_peak_rss_ratio": 1.3,
        },
    )


if __name__ == "__main__":
    main()
