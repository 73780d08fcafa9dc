"""`ray job submit` (the real client) against a real Ray head started with `ray start --head` on
127.0.0.1 with its own ports: the annotate job and a short retrain job run to SUCCEEDED."""

from __future__ import annotations

import json
import os
import re
import secrets
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.factories import one_per_voice_and_label

pytestmark = pytest.mark.vllm

BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory, small_home):
    temp = tmp_path_factory.mktemp("ray-head")
    dashboard = _free_port()
    # Token authentication, as a real cluster should run: the head and the client share the token.
    env = dict(
        os.environ,
        ANNOTATOR_HOME=str(small_home),
        RAY_AUTH_MODE="token",
        RAY_AUTH_TOKEN=secrets.token_hex(16),
    )
    env.pop("RAY_ADDRESS", None)
    ports = {
        "--port": _free_port(),
        "--dashboard-port": dashboard,
        "--ray-client-server-port": _free_port(),
        "--dashboard-agent-listen-port": _free_port(),
        "--dashboard-agent-grpc-port": _free_port(),
        "--metrics-export-port": _free_port(),
        "--runtime-env-agent-port": _free_port(),
    }
    start = [str(BIN / "ray"), "start", "--head", "--node-ip-address=127.0.0.1", "--num-cpus=2"]
    start += ["--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--temp-dir={temp}"]
    start += [f"{flag}={port}" for flag, port in ports.items()]
    done = subprocess.run(start, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    address = f"http://127.0.0.1:{dashboard}"
    yield address, env
    subprocess.run([str(BIN / "ray"), "stop", "--force"], env=env, capture_output=True, timeout=120)


def _submit(address: str, env: dict, entrypoint: list[str], extra_env: dict) -> str:
    runtime_env = json.dumps({"env_vars": extra_env})
    cmd = [str(BIN / "ray"), "job", "submit", "--address", address]
    cmd += ["--runtime-env-json", runtime_env, "--", *entrypoint]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    # The client follows the job's logs and exits non-zero unless the job SUCCEEDED.
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    job_id = re.search(r"Job '(raysubmit_\w+)' succeeded", done.stdout).group(1)
    status = subprocess.run(
        [str(BIN / "ray"), "job", "status", "--address", address, job_id],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert f"Job '{job_id}' succeeded" in status.stdout, status.stdout + status.stderr
    return done.stdout


def test_annotate_job_on_a_real_head(ray_head, corpus, small_home, tmp_path):
    address, env = ray_head
    root, spoken = corpus
    out = tmp_path / "out"
    logs = _submit(
        address,
        env,
        [sys.executable, "-m", "jobs.annotate", str(root), "--out", str(out)],
        {"ANNOTATOR_HOME": str(small_home)},
    )
    assert "recordings" in logs and "quarantined" in logs  # the run summary reached the job log
    from annotator.query import Annotations

    ann = Annotations(str(out))
    files = ann.sql("SELECT count(DISTINCT source_uri || member) FROM segments").fetchall()[0][0]
    assert files == len(spoken)
    assert ann.sql("SELECT count(*) FROM errors").fetchall()[0][0] == 1


def test_retrain_job_on_a_real_head(ray_head, synth_manifest, small_home, tmp_path):
    address, env = ray_head
    config = tmp_path / "short.yaml"
    config.write_text(
        f"train:\n  epochs_stage1: 0\n  epochs_stage2: 1\n  storage: {tmp_path / 'checkpoints'}\n"
    )
    # The job's wiring is the point here; how well training works is test_retrain.py's.
    manifest = one_per_voice_and_label(synth_manifest, tmp_path / "manifest.jsonl")
    bundle = tmp_path / "bundle"
    logs = _submit(
        address,
        env,
        [
            sys.executable,
            "-m",
            "jobs.retrain",
            "--manifest",
            str(manifest),
            "--out",
            str(bundle),
            "--config",
            str(config),
        ],
        {"ANNOTATOR_HOME": str(small_home)},
    )
    from annotator.models.bundle import Bundle

    assert Bundle.load(bundle).extra["trained"] is True
    assert '"ua"' in logs  # the held-out evaluation ran and printed its figures
