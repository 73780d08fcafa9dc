"""Sink benchmark: committing synthetic rows (no models) in the old per-file layout and as Delta
tables, to local disk and to a moto S3 server on loopback, in one run.

Reports files/s, segments/s and objects written per 10,000 input files for each, beside the rate
a 64-GPU cluster would ask of the driver (cluster/README.md's plan: 300 audio hours per GPU-hour,
five-minute calls). Only the sink is timed: the rows are made before the clock starts.

    python -m benchmarks.sink [--files 10000] [--legacy-s3-files 2000]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from datetime import UTC, datetime

from benchmarks.common import peak_rss_mib, write_result

SEGMENTS_PER_FILE = 60
PLAN_AUDIO_H_PER_GPU_H = 300
PLAN_GPUS = 64
PLAN_CALL_S = 300


def _objects_local(root: str) -> int:
    return sum(len(files) for _, _, files in os.walk(root))


def _objects_s3(fs, prefix: str) -> int:
    return len(fs.find(prefix))


def _run(kind: str, uri: str, s3, batches, files: int) -> dict:
    from annotator.config import CommitConfig
    from annotator.output.tables import OutputTables
    from annotator.pipeline.runs import new_run_id
    from annotator.pipeline.sink import RunInfo, Sink
    from benchmarks.legacy_sink import LegacySink

    run_id = new_run_id(datetime.now(UTC))
    if kind == "legacy":
        sink = LegacySink(uri, s3, run_id)
    else:
        info = RunInfo(run_id, "synthetic", "synthetic-asr", "synthetic-llm")
        sink = Sink(OutputTables(uri, s3), info, CommitConfig())
    t0 = time.perf_counter()
    for batch in batches:
        sink.add(batch)
    sink.close()
    wall = time.perf_counter() - t0
    committed = sink.files if kind == "legacy" else sink.counts.files
    assert committed == files, (kind, uri, committed, files)
    return {"files": files, "wall_s": round(wall, 2), "files_per_s": round(files / wall, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument(
        "--legacy-s3-files", type=int, default=2_000, help="the old layout on moto is slow"
    )
    args = parser.parse_args()

    from annotator.config import S3Config
    from annotator.pipeline import synthetic
    from tests.factories import make_bucket, moto_server

    print(f"making {args.files} files of synthetic rows ({SEGMENTS_PER_FILE} segments each) …")
    batches = list(synthetic.batches(0, args.files, SEGMENTS_PER_FILE, error_every=100))
    segments = sum(
        int((b["kind"].to_numpy(zero_copy_only=False) == "segment").sum()) for b in batches
    )
    small = list(synthetic.batches(0, args.legacy_s3_files, SEGMENTS_PER_FILE, error_every=100))
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp, moto_server() as endpoint:
        s3 = S3Config(endpoint_url=endpoint, key="testing", secret="testing", region="us-east-1")
        make_bucket(s3, "sink-bench")
        from annotator.storage import filesystem

        fs, _ = filesystem("s3://sink-bench", s3)
        for kind in ("legacy", "delta"):
            for where in ("local", "moto_s3"):
                n, work = args.files, batches
                if kind == "legacy" and where == "moto_s3":
                    n, work = args.legacy_s3_files, small
                uri = (
                    os.path.join(tmp, f"{kind}-{where}")
                    if where == "local"
                    else f"s3://sink-bench/{kind}"
                )
                print(f"{kind} → {where}: {n} files …", flush=True)
                figures = _run(kind, uri, s3 if where != "local" else None, work, n)
                objects = (
                    _objects_local(uri)
                    if where == "local"
                    else _objects_s3(fs, uri[len("s3://") :])
                )
                figures["objects"] = objects
                figures["objects_per_10k_files"] = round(objects * 10_000 / n, 1)
                figures["segments_per_s"] = round(
                    figures["files_per_s"] * (segments / args.files), 1
                )
                results[f"{kind}_{where}"] = figures
                print(figures, flush=True)
    need = PLAN_GPUS * PLAN_AUDIO_H_PER_GPU_H * 3600 / PLAN_CALL_S / 3600
    write_result(
        "sink",
        {
            "segments_per_file": round(segments / args.files, 2),
            "results": results,
            "goals": {"local_files_per_s": 1000, "moto_files_per_s": 200, "objects_per_10k": 50},
            "cluster_64_gpu_files_per_s": round(need, 1),
            "cluster_plan": f"{PLAN_GPUS} GPUs × {PLAN_AUDIO_H_PER_GPU_H} audio h per GPU-hour, "
            f"{PLAN_CALL_S} s calls",
            "peak_rss_mib": round(peak_rss_mib(), 1),
        },
    )


if __name__ == "__main__":
    main()
