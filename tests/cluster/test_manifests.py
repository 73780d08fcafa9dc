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


def test_paper_config_loads_and_gpu_fractions_fit_one_gpu():
    from annotator.config import load_config

    config = load_config(CLUSTER / "paper.yaml")
    stages = config.stages
    used = sum(s.num_gpus * s.concurrency for s in (stages.asr, stages.features, stages.label))
    assert 0 < used <= 1.0
    assert config.models.llm == "Qwen/Qwen2.5-7B-Instruct"
