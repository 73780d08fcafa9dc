"""Every file in cluster/ validates: KubeRay kinds against the CRDs' openAPIV3Schema (strict:
unknown fields refused, as `kubectl --validate=strict` does), core kinds with kubernetes-validate,
the cluster-launcher YAML against Ray's own schema, the Dockerfile with hadolint, and the
annotator config with annotator's loader. A deliberately broken copy of each fails."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CLUSTER = ROOT / "cluster"
# The KubeRay v1 CRDs, vendored unchanged (where from: cluster/kuberay-crds/README.md).
CRDS = CLUSTER / "kuberay-crds"
KUBERAY = {"RayCluster": "rayclusters", "RayJob": "rayjobs", "RayCronJob": "raycronjobs"}
K8S_VERSION = "1.30"


def _strict(schema):
    """Refuse unknown fields wherever the schema lists its fields and does not keep unknowns."""
    if isinstance(schema, dict):
        schema = {k: _strict(v) for k, v in schema.items()}
        if (
            "properties" in schema
            and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")
        ):
            schema["additionalProperties"] = False
        return schema
    if isinstance(schema, list):
        return [_strict(v) for v in schema]
    return schema


def crd_schema(kind: str, version: str) -> dict:
    crd = yaml.safe_load((CRDS / f"ray.io_{KUBERAY[kind]}.yaml").read_text())
    for v in crd["spec"]["versions"]:
        if v["name"] == version:
            return _strict(v["schema"]["openAPIV3Schema"])
    raise AssertionError(f"no {version} in the {kind} CRD")


def validate(doc: dict) -> None:
    kind = doc["kind"]
    if kind in KUBERAY:
        group, version = doc["apiVersion"].split("/")
        assert group == "ray.io"
        body = {k: v for k, v in doc.items() if k != "metadata"}  # metadata: ObjectMeta, below
        jsonschema.validate(body, crd_schema(kind, version))
        assert doc["metadata"]["name"]
    else:
        import kubernetes_validate

        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def manifests() -> list[tuple[str, dict]]:
    found = []
    for path in sorted(CLUSTER.glob("*.yaml")):
        if path.name in ("paper.yaml", "cluster-launcher.yaml"):
            continue
        found += [(path.name, d) for d in yaml.safe_load_all(path.read_text()) if d]
    return found


@pytest.mark.parametrize(
    "name,doc", manifests(), ids=lambda v: v if isinstance(v, str) else v["kind"]
)
def test_manifest_validates(name, doc):
    validate(doc)


def test_every_kuberay_kind_is_present():
    kinds = {doc["kind"] for _, doc in manifests()}
    assert set(KUBERAY) <= kinds and {"PersistentVolumeClaim", "Secret"} <= kinds


def test_rayjob_tears_down_and_has_limits():
    jobs = [d for _, d in manifests() if d["kind"] == "RayJob"]
    crons = [d["spec"]["jobTemplate"] for _, d in manifests() if d["kind"] == "RayCronJob"]
    for spec in [j["spec"] for j in jobs] + crons:
        assert spec["shutdownAfterJobFinishes"] is True
        assert spec["ttlSecondsAfterFinished"] > 0 and spec["activeDeadlineSeconds"] > 0
        assert "jobs.annotate" in spec["entrypoint"]


@pytest.mark.parametrize(
    "kind,breakage",
    [
        ("RayJob", lambda d: d["spec"].__setitem__("shutdownAfterJobFinishes", "yes")),
        ("RayJob", lambda d: d["spec"].__setitem__("shutdownAfterJobFinshes", True)),  # typo
        ("RayCronJob", lambda d: d["spec"].pop("schedule")),
        ("RayCluster", lambda d: d["spec"]["workerGroupSpecs"][0].__setitem__("maxReplicas", "8")),
        ("PersistentVolumeClaim", lambda d: d["spec"].__setitem__("accessMode", ["ReadOnlyMany"])),
    ],
)
def test_broken_manifest_fails(kind, breakage):
    doc = copy.deepcopy(next(d for _, d in manifests() if d["kind"] == kind))
    breakage(doc)
    with pytest.raises(Exception) as failure:
        validate(doc)
    assert failure.type.__name__ in ("ValidationError", "ValidationError_")


def _ray_cluster_specs(doc: dict) -> list[dict]:
    """The RayCluster specs a KubeRay object holds (a RayJob and a RayCronJob each carry one)."""
    spec = doc.get("spec", {})
    return {
        "RayCluster": [spec],
        "RayJob": [spec.get("rayClusterSpec")],
        "RayCronJob": [spec.get("jobTemplate", {}).get("rayClusterSpec")],
    }.get(doc["kind"], [])


def token_secrets(cluster: dict) -> set[str]:
    """The Secret every Ray container of one RayCluster spec takes its token from; fails on any
    container without RAY_AUTH_MODE=token and RAY_AUTH_TOKEN from a Secret's ``auth_token``."""
    auth = cluster.get("authOptions", {})
    # KubeRay puts this Secret's token into the pods it builds itself (autoscaler sidecar, RayJob
    # submitter) and reads it for its own dashboard calls; it wants the key `auth_token`.
    assert auth.get("mode") == "token" and auth.get("secretName"), auth
    groups = [("head", cluster["headGroupSpec"])]
    groups += [(g["groupName"], g) for g in cluster.get("workerGroupSpecs", [])]
    found = {auth["secretName"]}
    for group, spec in groups:
        for container in spec["template"]["spec"]["containers"]:
            env = {e["name"]: e for e in container.get("env", [])}
            where = f"{group}/{container['name']}"
            assert env.get("RAY_AUTH_MODE", {}).get("value") == "token", where
            ref = env.get("RAY_AUTH_TOKEN", {}).get("valueFrom", {}).get("secretKeyRef", {})
            assert ref.get("key") == "auth_token" and ref.get("name"), where
            found.add(ref["name"])
    return found


def test_every_ray_container_has_the_token_from_one_secret():
    clusters = [c for _, doc in manifests() for c in _ray_cluster_specs(doc)]
    assert len(clusters) == 3
    secrets = set().union(*(token_secrets(c) for c in clusters))
    assert secrets == {"annotator-ray-token"}


@pytest.mark.parametrize(
    "breakage",
    [
        lambda c: c["workerGroupSpecs"][0]["template"]["spec"]["containers"][0].pop("env"),
        lambda c: c["headGroupSpec"]["template"]["spec"]["containers"][0]["env"].pop(1),
        lambda c: c.pop("authOptions"),
    ],
    ids=["worker-without-env", "head-without-mode", "no-authOptions"],
)
@pytest.mark.parametrize("kind", sorted(KUBERAY))
def test_a_ray_container_without_the_token_fails(kind, breakage):
    doc = copy.deepcopy(next(d for _, d in manifests() if d["kind"] == kind))
    (cluster,) = _ray_cluster_specs(doc)
    breakage(cluster)
    with pytest.raises(AssertionError):
        token_secrets(cluster)


def test_a_second_secret_is_noticed():
    doc = copy.deepcopy(next(d for _, d in manifests() if d["kind"] == "RayJob"))
    (cluster,) = _ray_cluster_specs(doc)
    env = cluster["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]["env"]
    next(e for e in env if e["name"] == "RAY_AUTH_TOKEN")["valueFrom"]["secretKeyRef"]["name"] = (
        "other"
    )
    assert token_secrets(cluster) == {"annotator-ray-token", "other"}


def test_cluster_launcher_gives_every_node_the_token():
    config = yaml.safe_load((CLUSTER / "cluster-launcher.yaml").read_text())
    docker = config["docker"]
    # run_options reach every node's container; per-kind or per-node-type options would not.
    assert not {"head_run_options", "worker_run_options"} & set(docker)
    assert not any("docker" in t for t in config["available_node_types"].values())
    env = dict(o[3:].split("=", 1) for o in docker["run_options"] if o.startswith("-e "))
    assert env["RAY_AUTH_MODE"] == "token"
    assert env["RAY_AUTH_TOKEN_PATH"] in config["file_mounts"]


def test_cluster_launcher_matches_rays_schema():
    import ray.autoscaler

    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    config = yaml.safe_load((CLUSTER / "cluster-launcher.yaml").read_text())
    jsonschema.validate(config, schema)
    broken = dict(config, max_workers="eight")
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema)


def _hadolint(path: Path) -> subprocess.CompletedProcess:
    binary = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    return subprocess.run([binary, str(path)], capture_output=True, text=True)


def test_dockerfile_passes_hadolint(tmp_path):
    done = _hadolint(CLUSTER / "Dockerfile")
    assert done.returncode == 0, done.stdout + done.stderr
    broken = tmp_path / "Dockerfile"
    broken.write_text(
        (CLUSTER / "Dockerfile")
        .read_text()
        .replace("FROM rayproject/ray:2.60.0-py311-cu128", "FROM rayproject/ray")
        + "\nRUN apt-get install curl\n"
    )
    assert _hadolint(broken).returncode != 0


def test_paper_config_loads_and_gpu_shares_fit_one_gpu():
    from annotator.config import load_config

    config = load_config(CLUSTER / "paper.yaml")
    stages = config.stages
    used = sum(s.num_gpus * s.per_gpu for s in (stages.asr, stages.features, stages.label))
    assert used == pytest.approx(0.95)
    assert (stages.asr.per_gpu, stages.features.per_gpu, stages.label.per_gpu) == (2, 1, 1)
    assert config.models.llm == "Qwen/Qwen2.5-7B-Instruct"


def test_paper_max_gpus_is_what_the_gpu_worker_groups_may_grow_to():
    paper = yaml.safe_load((CLUSTER / "paper.yaml").read_text())
    for _, doc in manifests():
        for cluster in _ray_cluster_specs(doc):
            grow_to = sum(
                g["maxReplicas"] * int(g["rayStartParams"].get("num-gpus", "0"))
                for g in cluster["workerGroupSpecs"]
            )
            assert grow_to == paper["cluster"]["max_gpus"], doc["metadata"]["name"]
