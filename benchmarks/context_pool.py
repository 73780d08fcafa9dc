"""MiSTER-E's context model in its actor pool: segments/s with 1 and 3 actors on a simulated
3-node cluster, against the labeller on the driver's thread (where it ran before the pool).

    python -m benchmarks.context_pool [--size paper|small] [--files 24] [--utterances 400]

The small profile's untrained MiSTER-E bundle, its context model replaced (``--size paper``, the
default) by one of the published code's sizes with random weights (benchmarks/context_memory.py,
``paper``); ``--files`` split calls of ``--utterances`` segments each with random embeddings, in arrival (shuffled) order, labelled as one commit
(``ContextPool.label``, the sink's call). The cluster is ``ray.cluster_utils.Cluster`` with
three 2-CPU nodes: several raylets on this one machine, real scheduling but not real extra
cores, so 3 actors can at most use the 2 cores this machine has. Each figure is the best of
``--repeats`` passes after a warm-up.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from benchmarks.common import write_result

NODE = {"num_cpus": 2, "memory": 5 * 1024**3, "object_store_memory": 300 * 1024**2}


def segments(files: int, utterances: int, dim: int):
    import pyarrow as pa

    from benchmarks.context_memory import segment_table

    parts = []
    for k in range(files):
        part = segment_table(utterances, dim)
        parts.append(part.set_column(0, "call_id", pa.array([f"call-{k}"] * utterances)))
    return pa.concat_tables(parts)


def paper_sized(small_bundle: Path, out: Path) -> tuple[Path, int]:
    """A copy of the small MiSTER-E bundle whose context model has the published code's sizes
    (random weights): the bundle's directory and the embedding width it takes."""
    import json

    from annotator.kinds.mister_e.model import MisterE, MisterEConfig
    from annotator.models.bundle import META, Bundle, write_meta
    from benchmarks.context_memory import profiles

    shutil.copytree(small_bundle, out)
    labels = Bundle.load(small_bundle).labels
    model = MisterE(MisterEConfig(num_labels=len(labels), labels=labels, **profiles()["paper"]))
    model.save(out)
    meta = json.loads((out / META).read_text())
    meta.pop("version")
    write_meta(out, meta)
    return out, model.config.speech_dim


def best_rate(label, table, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        out = label(table)
        best = min(best, time.perf_counter() - t)
        assert out.num_rows == table.num_rows
    return table.num_rows / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=24)
    parser.add_argument("--utterances", type=int, default=400)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--size", choices=("paper", "small"), default="paper")
    args = parser.parse_args()

    import ray
    import torch
    from ray.cluster_utils import Cluster

    from annotator.config import default_home, load_config
    from annotator.kinds import KINDS
    from annotator.kinds.mister_e import untrained
    from annotator.kinds.mister_e.context import ContextLabeller
    from annotator.models.bundle import Bundle
    from annotator.models.profiles import build_small_profile
    from annotator.pipeline.context import ContextPool
    from annotator.pipeline.pools import cluster_nodes, pool_size

    root = build_small_profile(default_home())
    work = Path(tempfile.mkdtemp(prefix="context-pool-"))
    bundle_dir = root / KINDS["mister_e"].small_bundle
    dim = untrained.DIM
    if args.size == "paper":
        bundle_dir, dim = paper_sized(bundle_dir, work / "bundle")
    config = load_config(None, models={"bundle": str(bundle_dir)})
    table = segments(args.files, args.utterances, dim)
    warm = segments(2, 16, dim)
    result: dict = {"size": args.size, "files": args.files, "segments": table.num_rows}

    torch.set_num_threads(1)
    bundle = Bundle.load(bundle_dir)
    driver = ContextLabeller(
        bundle, config.models.context_window, config.models.context_overlap, 0.0
    )
    driver.label(warm)
    result["driver_thread_segments_per_s"] = best_rate(driver.label, table, args.repeats)

    cluster = Cluster(initialize_head=True, head_node_args=NODE)
    for _ in range(2):
        cluster.add_node(**NODE)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    try:
        for size in (1, 3):
            pool = ContextPool(config, KINDS["mister_e"].context, cluster_nodes(), size=size)
            try:
                pool.label(warm)
                rate = best_rate(pool.label, table, args.repeats)
                nodes = {where.split("/")[0] for where in pool.placement}
            finally:
                pool.close()
            result[f"actors_{size}_segments_per_s"] = rate
            result[f"actors_{size}_nodes_that_labelled"] = len(nodes)
        # What annotate starts on this cluster (stages.context: one actor a node in small).
        result["pool_size_annotate_starts"] = pool_size(
            "context", config.stages.context, cluster_nodes(), config.cluster
        ).initial
    finally:
        ray.shutdown()
        cluster.shutdown()
        shutil.rmtree(work, ignore_errors=True)
    result["three_over_one_actor"] = (
        result["actors_3_segments_per_s"] / result["actors_1_segments_per_s"]
    )
    result["three_actors_over_driver_thread"] = (
        result["actors_3_segments_per_s"] / result["driver_thread_segments_per_s"]
    )
    write_result("context_pool", result)


if __name__ == "__main__":
    main()
