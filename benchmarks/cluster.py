"""Actors per node per stage on a Ray cluster of 1, 2 and 3 nodes simulated on this machine.

    python -m benchmarks.cluster [--minutes 4] [--files 12] [--nodes 1,2,3]

Each size is a fresh ``ray.cluster_utils.Cluster`` of 2-CPU nodes (several raylets on this one
machine: real scheduling, not real extra cores) running ``annotate`` with the default
configuration over the same espeak-ng corpus. Per size: the pools derived from the cluster
(``annotator/pipeline/pools.py``), where Ray placed each stage's actors (Ray's state API), how
many actors on each node processed segments (the rows' ``<stage>_at`` tally), and the wall time.
The wall time is not a speed-up figure: the simulated nodes share the machine's 2 cores.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections import Counter
from pathlib import Path

from benchmarks.common import write_result
from benchmarks.e2e import make_corpus

NODE = {"num_cpus": 2, "memory": 5 * 1024**3, "object_store_memory": 200 * 1024**2}
STAGES = {"ASRStage": "asr", "FeaturesStage": "features", "LabelStage": "label"}


def _placed_actors() -> dict[str, dict[str, int]]:
    from ray.util.state import list_actors

    placed: dict[str, Counter[str]] = {}
    for actor in list_actors(detail=True, limit=10_000, raise_on_missing_output=False):
        for cls, stage in STAGES.items():
            if cls in (actor.repr_name or "") and actor.node_id:
                placed.setdefault(stage, Counter())[actor.node_id[:8]] += 1
    return {stage: dict(sorted(nodes.items())) for stage, nodes in sorted(placed.items())}


def run(nodes: int, corpus: Path, audio_s: float) -> dict:
    import ray
    from ray.cluster_utils import Cluster

    from annotator.config import load_config
    from annotator.pipeline.graph import pools
    from annotator.pipeline.pools import cluster_nodes
    from annotator.pipeline.run import annotate

    cluster = Cluster(initialize_head=True, head_node_args={**NODE, "include_dashboard": True})
    for _ in range(nodes - 1):
        cluster.add_node(**NODE)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    try:
        with tempfile.TemporaryDirectory() as out:
            config = load_config(None, output=out, ray_address=cluster.address)
            sizes = pools(config, cluster_nodes())
            t0 = time.perf_counter()
            summary = annotate(config, [str(corpus)])
            wall = time.perf_counter() - t0
        worked = {
            stage: {node[:8]: n for node, n in per_node.items()}
            for stage, per_node in summary.counts.nodes_per_stage().items()
        }
        return {
            "pools_min_initial_max": {n: [p.min, p.initial, p.max] for n, p in sizes.items()},
            "actors_per_node": _placed_actors(),
            "actors_that_did_work_per_node": worked,
            "segments": summary.counts.segments,
            "wall_s": round(wall, 1),
            "rtfx": round(audio_s / wall, 2),
        }
    finally:
        ray.shutdown()
        cluster.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=4)
    parser.add_argument("--files", type=int, default=12)
    parser.add_argument("--nodes", default="1,2,3")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "corpus"
        audio_s = make_corpus(corpus, args.minutes, args.files)
        figures = {"audio_s": round(audio_s, 1), "files": args.files, "node": NODE, "by_nodes": {}}
        for n in (int(x) for x in args.nodes.split(",")):
            figures["by_nodes"][str(n)] = run(n, corpus, audio_s)
            print(n, figures["by_nodes"][str(n)], flush=True)
    write_result("cluster", figures)


if __name__ == "__main__":
    main()
