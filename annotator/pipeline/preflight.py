"""What a run checks before any work: a mistake that would cost the night costs seconds instead.

Before decode starts, in this order, each failure a :class:`PreflightError` of one line that
names the thing:

* every source the user named exists (a file, directory or object) or, for a glob, its literal
  prefix holds something: a typo in a path is an error, not an empty night;
* the output is writable: a directory (made if missing, not a regular file) or an ``s3://``
  prefix where a test object can be written and removed;
* the bundle and every model the bundle's stages load resolve: ``s3://`` trees exist, and a
  local path exists **on every node of the cluster** (one small task per node looks): a path
  only the driver's disk has fails here, naming the node, instead of in an actor constructor;
* the resources the stages ask for exist on the cluster or within ``cluster.max_gpus`` /
  ``max_nodes`` (annotator/pipeline/pools.py, when the graph is built).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path

from annotator.config import AnnotatorConfig, S3Config
from annotator.storage import exists, filesystem, is_remote, join

GLOB_CHARS = set("*?[")
NODE_CHECK_TIMEOUT_S = 120.0


class PreflightError(RuntimeError):
    """Something the run needs is not there; the message names it."""


def _failures() -> tuple[type[Exception], ...]:
    from annotator.config import ConfigError
    from annotator.models.bundle import BundleError
    from annotator.models.profiles import ProfileError
    from annotator.storage import StorageError

    return (PreflightError, BundleError, ConfigError, ProfileError, StorageError)


# What a check may raise: each names what is wrong, and the run turns it into one line.
FAILURES = _failures()


def check_sources(inputs: Iterable[str], s3: S3Config) -> None:
    """Every input names something (see the module doc)."""
    missing = []
    for uri in inputs:
        literal = uri
        if GLOB_CHARS & set(uri):
            cut = min(uri.index(c) for c in GLOB_CHARS if c in uri)
            literal = uri[:cut].rsplit("/", 1)[0] or "/"
            if not is_remote(uri):
                import glob

                if next(glob.iglob(uri, recursive=True), None) is None:
                    missing.append(f"{uri} (the glob matches nothing)")
                continue
        if not exists(literal, s3):
            missing.append(uri)
    if missing:
        raise PreflightError(
            f"no such source: {', '.join(missing)} (nothing to annotate there; check the path)"
        )


def check_output(uri: str, s3: S3Config) -> None:
    """The output can be written: a test object written and removed."""
    if not is_remote(uri):
        path = Path(uri)
        if path.exists() and not path.is_dir():
            raise PreflightError(f"output {uri} is a file, not a directory for the tables")
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise PreflightError(f"output {uri} cannot be made: {exc.strerror}") from None
    probe = join(uri, f".annotator-write-check-{uuid.uuid4().hex[:8]}")
    fs, path = filesystem(probe, s3)
    try:
        fs.pipe_file(path, b"")
        fs.rm_file(path)
    except Exception as exc:  # PermissionError, botocore errors, a read-only mount...
        raise PreflightError(f"output {uri} is not writable: {type(exc).__name__}: {exc}") from None


def _is_local_path(name: str) -> bool:
    """A name that can only be a path of some disk (not a hub name)."""
    return name.startswith(("/", "./", "../", "~")) or Path(name).exists()


def check_models(named: Mapping[str, str], config: AnnotatorConfig) -> None:
    """Each model (label → name, as the config or bundle names it) resolves, as the module doc
    says: object storage here, local paths on every node. Hub names are not checked (clusters
    with hub access load them by name)."""
    from annotator.models.locate import locate

    local: dict[str, str] = {}
    missing = []
    for label, name in named.items():
        try:
            where = locate(name, config.models, config.s3)
        except Exception as exc:  # a profile not built, a registry pointer that is not there
            raise PreflightError(f"{label} {name!r}: {exc}") from None
        if is_remote(where):
            if not exists(where, config.s3):
                missing.append(f"{label} {where} (no such object prefix)")
        elif _is_local_path(where):
            local[label] = os.path.abspath(os.path.expanduser(where))
    if missing:
        raise PreflightError("not found: " + "; ".join(missing))
    if local:
        _check_on_every_node(local)


def _check_on_every_node(paths: Mapping[str, str]) -> None:
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    @ray.remote(num_cpus=0, max_retries=0)
    def missing_here(wanted: list[str]) -> list[str]:
        return [p for p in wanted if not os.path.exists(p)]

    nodes = [n for n in ray.nodes() if n.get("Alive")]
    wanted = sorted(set(paths.values()))
    refs = {
        node["NodeID"]: missing_here.options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)
        ).remote(wanted)
        for node in nodes
    }
    gone: dict[str, list[str]] = {}
    for node_id, ref in refs.items():
        try:
            lacking = ray.get(ref, timeout=NODE_CHECK_TIMEOUT_S)
        except ray.exceptions.GetTimeoutError:
            raise PreflightError(
                f"node {node_id[:12]} did not answer within {NODE_CHECK_TIMEOUT_S:.0f} s when "
                "asked whether it has the models' local paths"
            ) from None
        for path in lacking:
            gone.setdefault(path, []).append(node_id[:12])
    if gone:
        by_label = {path: label for label, path in paths.items()}
        described = "; ".join(
            f"{by_label[path]} {path} is missing on {len(ids)} of {len(nodes)} nodes "
            f"({', '.join(ids)})"
            for path, ids in sorted(gone.items())
        )
        raise PreflightError(
            f"{described}: the nodes share no disk with this one. Name it by s3:// (annotator "
            "models push, models.store), registry: (annotator bundles push), or mount it on "
            "every node"
        )
