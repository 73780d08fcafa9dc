"""Memory of listing a large S3 prefix: 20,000 vs 200,000 objects on a moto S3 server.

Each figure is the peak RSS of a fresh process that lists the prefix:

* ``stream``: what a run does now. The listing task of ``annotator/pipeline/inputs.py`` pages
  through the prefix (``iter_sources``) and hands the files on; nothing keeps the whole list.
* ``gathered``: what the driver did before: every URI in a list on the driver, from s3fs's own
  walk (which also caches the whole prefix).
* ``rerun_driver``: the driver of a Ray Data run over the listing datasource when every file is
  already committed (the rerun case): the done-set goes out once as a uint64 array, the listing
  runs in a Ray task, the driver only receives the skipped rows.

Objects are put straight into moto's in-memory backend (the server reads the same state), so a
200,000-object bucket is ready in seconds.

    python -m benchmarks.listing
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

from benchmarks.common import write_result

BUCKET = "listing-bench"


def _server():
    import socket

    from moto.server import ThreadedMotoServer

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    return server, f"http://127.0.0.1:{port}"


def _fill(count: int) -> None:
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.s3.models import s3_backends

    backend = s3_backends[DEFAULT_ACCOUNT_ID]["aws"]
    if BUCKET not in backend.buckets:
        backend.create_bucket(BUCKET, "us-east-1")
    have = sum(1 for k in backend.buckets[BUCKET].keys if k.startswith("night/"))
    for i in range(have, count):
        backend.put_object(BUCKET, f"night/call-{i:07d}.wav", b"")


def peak_rss_mib() -> float:
    """This process's peak RSS (VmHWM). Not getrusage's ru_maxrss: that survives exec, so a child
    would report the parent's peak (here the moto server's, which holds the objects)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def child(mode: str, endpoint: str, count: int) -> None:
    """Runs in a fresh process; prints its figures as JSON."""
    from annotator.audio.sources import iter_sources, recording_id
    from annotator.config import AudioConfig, S3Config, load_config
    from annotator.storage import filesystem

    s3 = S3Config(endpoint_url=endpoint, key="testing", secret="testing", region="us-east-1")
    uri = f"s3://{BUCKET}/night"
    t0 = time.perf_counter()
    base = peak_rss_mib()
    if mode == "stream":
        n = sum(1 for _ in iter_sources([uri], AudioConfig(), s3))
    elif mode == "gathered":
        fs, path = filesystem(uri, s3)
        n = len([f"s3://{d}/{f}" for d, _, files in fs.walk(path) for f in sorted(files)])
    else:  # rerun_driver
        import ray

        from annotator.pipeline.inputs import DoneSet, source_listing

        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        done = DoneSet(recording_id(f"s3://{BUCKET}/night/call-{i:07d}.wav") for i in range(count))
        base = peak_rss_mib()
        config = load_config(None, s3=s3.model_dump())
        ds = ray.data.read_datasource(
            source_listing([uri], config.audio, s3, ray.put(done)), override_num_blocks=1
        )
        n = 0
        for batch in ds.iter_batches(batch_format="pyarrow", batch_size=None):
            n += sum(batch["skipped"].to_pylist())
    print(
        json.dumps(
            {
                "listed": n,
                "seconds": round(time.perf_counter() - t0, 2),
                "peak_rss_mib": round(peak_rss_mib(), 1),
                "rss_before_listing_mib": round(base, 1),
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", default="20000,200000")
    parser.add_argument("--child", nargs=3, metavar=("MODE", "ENDPOINT", "COUNT"))
    args = parser.parse_args()
    if args.child:
        child(args.child[0], args.child[1], int(args.child[2]))
        return
    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing")
    server, endpoint = _server()
    counts = [int(c) for c in args.counts.split(",")]
    figures: dict = {"objects": counts, "runs": {}}
    try:
        for count in counts:
            _fill(count)
            for mode in ("stream", "gathered", "rerun_driver"):
                out = subprocess.run(
                    [
                        sys.executable,
                        "-m",
                        "benchmarks.listing",
                        "--child",
                        mode,
                        endpoint,
                        str(count),
                    ],
                    capture_output=True,
                    text=True,
                    check=True,
                )
                result = json.loads(out.stdout.strip().splitlines()[-1])
                assert result["listed"] == count, result
                figures["runs"].setdefault(mode, {})[str(count)] = result
                print(mode, count, result, flush=True)
    finally:
        server.stop()
    small, big = (str(c) for c in (counts[0], counts[-1]))
    figures["peak_rss_ratio"] = {
        mode: round(runs[big]["peak_rss_mib"] / runs[small]["peak_rss_mib"], 3)
        for mode, runs in figures["runs"].items()
    }
    write_result("listing", figures)


if __name__ == "__main__":
    main()
