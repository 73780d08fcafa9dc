"""Pool sizes derived from the cluster's resources (the arithmetic; the multi-node scheduling
itself is walked on a real simulated cluster in test_cluster.py)."""

from __future__ import annotations

import pytest

from annotator.config import ClusterConfig, StageResources, load_config
from annotator.pipeline.graph import pools
from annotator.pipeline.pools import GIB, Node, PoolError, PoolSize, pool_size


def _gpu_node(gpus: int) -> Node:
    return Node(cpus=24.0 * gpus, gpus=float(gpus), memory_bytes=200.0 * GIB * gpus)


def test_paper_pools_follow_the_gpus_of_the_cluster():
    config = load_config(None, profile="paper")
    one = pools(config, [_gpu_node(1)])
    assert {n: (p.initial, p.max) for n, p in one.items()} == {
        "asr": (2, 2),
        "features": (1, 1),
        "label": (1, 1),
    }
    # A 64-GPU cluster (8 nodes × 8 GPUs) plus a CPU-only head: every GPU gets its share.
    head = Node(cpus=0.0, gpus=0.0, memory_bytes=16.0 * GIB)
    big = pools(config, [head] + [_gpu_node(8)] * 8)
    assert {n: (p.min, p.initial, p.max) for n, p in big.items()} == {
        "asr": (1, 128, 128),
        "features": (1, 64, 64),
        "label": (1, 64, 64),
    }


def test_an_autoscaling_cluster_grows_the_pools_to_its_maximum():
    config = load_config(None, profile="paper", cluster={"max_gpus": 32})
    sizes = pools(config, [_gpu_node(8)])
    assert (sizes["asr"].initial, sizes["asr"].max) == (16, 64)
    assert (sizes["label"].initial, sizes["label"].max) == (8, 32)
    # Not started yet: no GPU node up, the pool waits for the autoscaler.
    cold = pools(config, [Node(cpus=8.0, gpus=0.0, memory_bytes=32.0 * GIB)])
    assert (cold["label"].min, cold["label"].initial, cold["label"].max) == (1, 1, 32)


def test_cpu_pools_put_per_node_actors_on_each_node_with_room():
    config = load_config()
    nodes = [Node(cpus=2.0, gpus=0.0, memory_bytes=8.0 * GIB)] * 3
    nodes.append(Node(cpus=0.0, gpus=0.0, memory_bytes=8.0 * GIB))  # a head with no CPUs
    nodes.append(Node(cpus=2.0, gpus=0.0, memory_bytes=1.0 * GIB))  # too little memory for label
    sizes = pools(config, nodes)
    assert sizes["asr"].initial == 4 and sizes["features"].initial == 4
    assert sizes["label"].initial == 3
    capped = config.stages.asr.model_copy(update={"max_actors": 2})
    assert pool_size("asr", capped, nodes, ClusterConfig()).max == 2


def test_a_gpu_stage_on_a_cluster_without_gpus_says_what_to_change():
    config = load_config(None, profile="paper")
    with pytest.raises(PoolError, match=r"stage asr needs 0\.25 GPU.*num_gpus 0 runs it on CPUs"):
        pools(config, [Node(cpus=16.0, gpus=0.0, memory_bytes=64.0 * GIB)])


def test_the_label_stage_takes_two_batches_at_once_on_a_gpu_and_other_stages_one():
    """On a GPU the label actor gets two batches at once, each on its own thread (its engine
    thread serves both), so the engine does not drain between batches; on CPU one."""
    from annotator.pipeline.graph import _actor_stage
    from annotator.pipeline.label import LabelStage
    from annotator.pipeline.stages import ASRStage

    gpu = StageResources(batch_size=256, num_cpus=4, num_gpus=0.35, memory_gb=24)
    cpu = StageResources(batch_size=64, num_cpus=0.25, memory_gb=2.0)
    pool = PoolSize(min=1, initial=1, max=2)
    calls = {
        (stage.__name__, name): _actor_stage(res, pool, stage.calls_at_once(res))["compute"]
        for stage in (LabelStage, ASRStage)
        for name, res in (("gpu", gpu), ("cpu", cpu))
    }
    label_gpu = calls[("LabelStage", "gpu")]
    assert label_gpu.max_concurrent_calls_per_actor == 2
    assert label_gpu.enable_true_multi_threading
    for key in (("LabelStage", "cpu"), ("ASRStage", "gpu"), ("ASRStage", "cpu")):
        assert calls[key].max_concurrent_calls_per_actor == 1, key
        assert not calls[key].enable_true_multi_threading, key
