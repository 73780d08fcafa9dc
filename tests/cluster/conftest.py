"""The blind cluster (tests/blind.py) for the distributed tests of this package: a head and three
worker nodes that cannot see this session's files, S3 (moto on loopback) their only shared store.
Started once for the package; the session's local Ray is put back after."""

from __future__ import annotations

import pytest

from tests.blind import GIB, BlindCluster


@pytest.fixture(scope="package")
def blind_cluster(tmp_path_factory, small_home, s3_models, s3_server):
    import ray

    was_local = ray.is_initialized()
    logs = tmp_path_factory.mktemp("blind-logs")
    cluster = BlindCluster(hidden=[tmp_path_factory.getbasetemp(), small_home], logs=logs)
    try:
        cluster.start_head()
        for _ in range(3):
            cluster.add_worker(num_cpus=2, memory=5 * GIB)
        yield cluster
    finally:
        cluster.shutdown()
        if was_local and not ray.is_initialized():
            ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)


@pytest.fixture(scope="package")
def blind_corpus(corpus, s3_server):
    """The session's speech corpus copied to S3, where blind nodes can read it: (its s3:// root,
    the local root it mirrors)."""
    from tests.factories import make_bucket, upload_dir

    root, _ = corpus
    upload_dir(s3_server, root, "corpus/night-1")
    make_bucket(s3_server, "annotations")
    return "s3://corpus/night-1", root


def blind_config(s3_server, s3_models, out, **extra):
    """A configuration for the blind cluster: every model from object storage."""
    from annotator.config import load_config

    models = {"store": s3_models, **extra.pop("models", {})}
    return load_config(None, output=str(out), s3=s3_server.model_dump(), models=models, **extra)
