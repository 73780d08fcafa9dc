"""Export benchmark: `annotator query … --format parquet|csv|json --output FILE` of every segment
of an output of 1,000 input files and of 100,000 (≈ 60 k and ≈ 6 M rows, written through the
real sink as benchmarks/query.py writes them, then compacted), each export in a fresh process:
its peak RSS (VmHWM) and wall time. The export streams DuckDB's record batches
(annotator/query/cli.py), so the peak should not grow with the rows; beside it, the earlier export
(the whole result as one Arrow table, then written) on the same outputs, and a 10,000-file output
to show where the streamed peak stops growing (DuckDB's working set: a row group per thread).

    python -m benchmarks.query_export [--sizes 1000,10000,100000] [--formats parquet,csv,json]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import write_result
from benchmarks.query import write_output

EXPORT = "SELECT * FROM segments"
FORMATS = ("parquet", "csv", "json")


# The export runs in a child that reports its own peak (VmHWM, reset by exec): the kernel's
# ru_maxrss of a child forked from this process counts this process's pages until the exec.
_CHILD = (
    "import atexit, runpy, sys\n"
    "def hwm():\n"
    "    status = open('/proc/self/status').read()\n"
    "    print('VmHWM_kB', status.split('VmHWM:')[1].split()[0], file=sys.stderr)\n"
    "atexit.register(hwm)\n"
    "sys.argv = ['annotator', *sys.argv[1:]]\n"
    "runpy.run_module('annotator.cli', run_name='__main__')\n"
)


# The earlier export: the whole result as one Arrow table, then written (for the comparison).
_WHOLE = (
    "import sys, pyarrow.parquet as pq\n"
    "from annotator.query import Annotations\n"
    "pq.write_table(Annotations(sys.argv[2]).sql(sys.argv[3]).to_arrow_table(), sys.argv[-1])\n"
)


def _export(output: str, fmt: str, dest: Path, whole: bool = False) -> dict:
    """One export in a fresh process: its peak RSS (MiB), seconds and bytes written."""
    t0 = time.perf_counter()
    args = ["query", output, EXPORT, "--format", fmt, "--output", str(dest)]
    child = _CHILD.replace("runpy.run_module('annotator.cli', run_name='__main__')", _WHOLE)
    done = subprocess.run(
        [sys.executable, "-c", child if whole else _CHILD, *args],
        capture_output=True,
        text=True,
        check=False,
    )
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        raise RuntimeError(f"export {fmt} failed: {done.stderr[-2000:]}")
    kib = int(done.stderr.rsplit("VmHWM_kB", 1)[1].split()[0])
    return {
        "peak_rss_mib": round(kib / 1024, 1),
        "seconds": round(seconds, 1),
        "bytes": dest.stat().st_size,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,100000", help="input files per output")
    parser.add_argument("--formats", default=",".join(FORMATS), help="comma-separated")
    args = parser.parse_args()
    formats = [f for f in args.formats.split(",") if f]
    sizes_asked = [int(n) for n in args.sizes.split(",")]

    from annotator.output.compact import compact

    sizes: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for files in sizes_asked:
            output = f"{tmp}/out-{files}"
            counts, write_s = write_output(output, files)
            compact(output, retain_hours=0)
            dest = Path(tmp) / "export"
            runs = {fmt: _export(output, fmt, dest.with_suffix(f".{fmt}")) for fmt in formats}
            runs["whole_table_parquet"] = _export(output, "parquet", dest.with_suffix(".w"), True)
            for path in Path(tmp).glob("export.*"):
                path.unlink()
            sizes[str(files)] = {"segments": counts.segments, "write_s": round(write_s, 1), **runs}
            print(files, sizes[str(files)], flush=True)
    small, large = sizes[str(sizes_asked[0])], sizes[str(sizes_asked[-1])]
    middle = sizes[str(sizes_asked[len(sizes_asked) // 2])]
    kinds = [*formats, "whole_table_parquet"]
    write_result(
        "query_export",
        {
            "query": EXPORT,
            "outputs": sizes,
            "peak_rss_ratio_largest_smallest": {
                k: round(large[k]["peak_rss_mib"] / small[k]["peak_rss_mib"], 3) for k in kinds
            },
            "peak_rss_ratio_largest_middle": {
                k: round(large[k]["peak_rss_mib"] / middle[k]["peak_rss_mib"], 3) for k in kinds
            },
            "goal_peak_rss_ratio": 1.3,
        },
    )


if __name__ == "__main__":
    main()
