"""Every file in cluster/ validates: KubeRay kinds against the CRDs' openAPIV3Schema (strict:
unknown fields refused, as `kubectl --validate=strict` does), core kinds with kubernetes-validate,
the cluster-launcher YAML against Ray's own schema, the Dockerfile with hadolint, and the
annotator config with annotator's loader. A deliberately broken copy of each fails."""

from __future__ import annotations

import copy
import json
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
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
    assert set(KUBERAY) <= kinds and "Secret" in kinds
    # No volume that pods share: object storage is the only shared medium.
    assert "PersistentVolumeClaim" not in kinds


def test_rayjob_tears_down_and_has_limits():
    jobs = [d for _, d in manifests() if d["kind"] == "RayJob"]
    crons = [d["spec"]["jobTemplate"] for _, d in manifests() if d["kind"] == "RayCronJob"]
    for spec in [j["spec"] for j in jobs] + crons:
        assert spec["shutdownAfterJobFinishes"] is True
        assert spec["ttlSecondsAfterFinished"] > 0 and spec["activeDeadlineSeconds"] > 0
        assert re.search(r"jobs\.(annotate|nightly)", spec["entrypoint"])


@pytest.mark.parametrize(
    "kind,breakage",
    [
        ("RayJob", lambda d: d["spec"].__setitem__("shutdownAfterJobFinishes", "yes")),
        ("RayJob", lambda d: d["spec"].__setitem__("shutdownAfterJobFinshes", True)),  # typo
        ("RayCronJob", lambda d: d["spec"].pop("schedule")),
        ("RayCluster", lambda d: d["spec"]["workerGroupSpecs"][0].__setitem__("maxReplicas", "8")),
        ("Secret", lambda d: d.__setitem__("stringdata", d.pop("stringData"))),  # typo
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
    assert config.models.llm == "s3://annotations/models/hf/Qwen2.5-7B-Instruct"


def test_paper_max_gpus_is_what_the_gpu_worker_groups_may_grow_to():
    paper = yaml.safe_load((CLUSTER / "paper.yaml").read_text())
    for _, doc in manifests():
        for cluster in _ray_cluster_specs(doc):
            grow_to = sum(
                g["maxReplicas"] * int(g["rayStartParams"].get("num-gpus", "0"))
                for g in cluster["workerGroupSpecs"]
            )
            assert grow_to == paper["cluster"]["max_gpus"], doc["metadata"]["name"]


# -- what each pod opens: nothing but its own mounts and object storage ----------------------------

# The ConfigMap the pods mount at /etc/annotator holds cluster/paper.yaml under this key
# (cluster/README.md: kubectl create configmap annotator-config --from-file=paper.yaml=…).
CONFIGMAP = {"annotator-config": {"paper.yaml": CLUSTER / "paper.yaml"}}
# Fields of the configuration that name a place: each must be in object storage (or a name that
# resolves there), or a path every pod that runs the stages mounts.
PLACES = (
    "output",
    "models.store",
    "models.registry",
    "models.bundle",
    "models.hubert",
    "models.text_encoder",
    "models.llm",
    "models.asr.model",
    "models.cache_dir",
    "train.storage",
)


def _pods(cluster: dict) -> dict[str, dict]:
    groups = {"head": cluster["headGroupSpec"]}
    groups.update({g["groupName"]: g for g in cluster.get("workerGroupSpecs", [])})
    return {name: group["template"]["spec"] for name, group in groups.items()}


def _mounts(pod: dict) -> dict[str, dict]:
    """mountPath → the volume mounted there, for the pod's Ray container."""
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    (container,) = [c for c in pod["containers"] if c["name"].startswith("ray-")]
    return {m["mountPath"]: volumes[m["name"]] for m in container.get("volumeMounts", [])}


def _under(path: str, mounts) -> bool:
    return any(path == m or path.startswith(m.rstrip("/") + "/") for m in mounts)


def _is_local(value: str | None) -> bool:
    return bool(value) and value.startswith(("/", "./", "~"))


def unmounted_paths(doc: dict, config_text: dict[str, str] | None = None) -> list[str]:
    """Every local path a process of this manifest's pods would open that its pod does not
    mount: in the entrypoint (run on the head), in the configuration it names (read from the
    ConfigMap the head mounts), and in each container's cache directory. Empty when the
    manifest starts on pods that share nothing but object storage."""
    from annotator.config import load_config

    problems = []
    spec = doc["spec"]
    entrypoint = spec.get("entrypoint") or spec.get("jobTemplate", {}).get("entrypoint")
    for cluster in _ray_cluster_specs(doc):
        pods = _pods(cluster)
        for name, pod in pods.items():
            (container,) = [c for c in pod["containers"] if c["name"].startswith("ray-")]
            env = {e["name"]: e.get("value") for e in container.get("env", [])}
            cache = env.get("ANNOTATOR_CACHE_DIR")
            if not cache or not _under(cache, _mounts(pod)):
                problems.append(f"{name}: ANNOTATOR_CACHE_DIR {cache} is not a volume of its own")
            if "ANNOTATOR_HOME" in env:
                problems.append(f"{name}: ANNOTATOR_HOME {env['ANNOTATOR_HOME']} (a shared home)")
        if not entrypoint:
            continue
        head = _mounts(pods["head"])
        tokens = shlex.split(entrypoint)
        for token in tokens:
            if _is_local(token) and not _under(token, head):
                problems.append(f"entrypoint: {token} is not mounted on the head")
        if "--config" not in tokens:
            continue
        path = tokens[tokens.index("--config") + 1]
        mount = next((m for m in head if _under(path, [m])), None)
        volume = head.get(mount, {})
        files = CONFIGMAP.get(volume.get("configMap", {}).get("name"), {})
        key = path.removeprefix(mount.rstrip("/") + "/") if mount else None
        if key not in files:
            problems.append(f"entrypoint: --config {path} is in no ConfigMap the head mounts")
            continue
        text = (config_text or {}).get(key) or files[key].read_text()
        with tempfile.NamedTemporaryFile("w", suffix=".yaml") as handle:
            handle.write(text)
            handle.flush()
            config = load_config(handle.name)
        every_pod = set.intersection(*(set(_mounts(p)) for p in pods.values()))
        for field in PLACES:
            value = config
            for part in field.split("."):
                value = getattr(value, part)
            if _is_local(value) and not _under(value, every_pod):
                problems.append(f"{path}: {field} {value} is a local path no pod shares")
    return problems


@pytest.mark.parametrize("name,doc", [(n, d) for n, d in manifests() if d["kind"] in KUBERAY])
def test_each_manifest_starts_on_pods_that_share_only_object_storage(name, doc):
    assert unmounted_paths(doc) == [], name


def test_a_planted_local_path_is_found():
    doc = copy.deepcopy(next(d for _, d in manifests() if d["kind"] == "RayJob"))
    planted = (
        (CLUSTER / "paper.yaml")
        .read_text()
        .replace("bundle: registry:current", "bundle: /models/bundles/emoq-paper")
    )
    assert unmounted_paths(doc, {"paper.yaml": planted}) == [
        "/etc/annotator/paper.yaml: models.bundle /models/bundles/emoq-paper is a local path "
        "no pod shares"
    ]
    doc["spec"]["entrypoint"] = doc["spec"]["entrypoint"].replace(
        "/etc/annotator/paper.yaml", "/etc/other/paper.yaml"
    )
    assert any("not mounted on the head" in p for p in unmounted_paths(doc))
    head = doc["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]
    head["containers"][0]["env"].append({"name": "ANNOTATOR_HOME", "value": "/models"})
    assert any("a shared home" in p for p in unmounted_paths(doc))


def test_the_nightly_run_names_the_day_before_in_its_schedules_time_zone():
    """Around both DST changes of 2026 in Berlin, at every 01:00 the cron fires (in Berlin
    time), the day annotated is the calendar day before, whatever the container's UTC clock
    says (at 01:00 CEST it is 23:00 UTC the day before)."""
    from datetime import UTC, datetime, timedelta
    from zoneinfo import ZoneInfo

    from jobs.nightly import previous_day

    (cron,) = [d for _, d in manifests() if d["kind"] == "RayCronJob"]
    zone = cron["spec"]["timeZone"]
    tokens = shlex.split(cron["spec"]["jobTemplate"]["entrypoint"])
    assert tokens[tokens.index("--time-zone") + 1] == zone
    assert cron["spec"]["schedule"] == "0 1 * * *"
    assert all("{day}" in t for t in tokens if t.startswith("s3://archive/"))
    for first in ("2026-03-26", "2026-10-23"):
        for k in range(6):  # before, on and after the change
            day = datetime.fromisoformat(first).date() + timedelta(days=k)
            fires = datetime(day.year, day.month, day.day, 1, tzinfo=ZoneInfo(zone))
            container_clock = fires.astimezone(UTC)
            assert previous_day(container_clock, zone) == day - timedelta(days=1), fires
    # The container's own date is not the schedule's: at 01:00 CEST, UTC is still yesterday.
    summer = datetime(2026, 7, 1, 1, tzinfo=ZoneInfo(zone)).astimezone(UTC)
    assert summer.date() - timedelta(days=1) != previous_day(summer, zone)
