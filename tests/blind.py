"""A Ray cluster on this machine that is as blind as a real one.

Each node (the head too) is a ``ray start`` in a mount namespace of its own (``unshare --mount``,
as root), with a fresh tmpfs mounted over every directory this test session writes to (pytest's
base temp directory, ``ANNOTATOR_HOME`` with the built small profile, and the node's own
``TMPDIR``): a process on any node
that opens a path of the driver's — a model directory, a manifest, a bundle, a corpus — finds
nothing, as on KubeRay pods that share only object storage. The repository and its virtual
environment stay visible (what a node's image holds), and so do ``/tmp/ray`` (each raylet's
sockets) and the loopback network, where the moto S3 server and the GCS listen.

Nodes are real Ray nodes: the scheduler spreads work over them, Ray Data restarts actors on
the survivors when one is killed (:meth:`BlindCluster.kill`: SIGKILL to every process of the
node), Ray Jobs run their entrypoint on the head.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

BIN = Path(sys.executable).parent
GIB = 1024**3


def machine_token() -> str:
    """This machine's Ray token (``~/.ray/auth_token``, made if missing). A process reads its
    token and auth mode once, at its first use of Ray, so every cluster a test process starts
    or joins uses this one."""
    own = Path.home() / ".ray" / "auth_token"
    if not own.is_file():
        own.parent.mkdir(parents=True, exist_ok=True)
        own.write_text(secrets.token_hex(32))
        own.chmod(0o600)
    return own.read_text().strip()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class BlindNode:
    name: str
    process: subprocess.Popen
    node_id: str = ""
    log: Path | None = None


@dataclass
class BlindCluster:
    """A head and worker nodes, each blind to ``hidden`` (see the module doc)."""

    hidden: list[Path]
    logs: Path
    env: dict[str, str] = field(default_factory=dict)
    nodes: list[BlindNode] = field(default_factory=list)
    gcs_port: int = 0
    dashboard_port: int = 0
    _ports: int = 20000
    _started: int = 0

    def __post_init__(self) -> None:
        # Token authentication, as every real cluster here runs (cluster/README.md): nodes,
        # drivers and the job client share the machine's token (tests/conftest.py).
        self.auth = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": machine_token()}
        # Each node's own temporary directory (TMPDIR: tempfile, Ray Train's staging), hidden
        # from the others like the rest; Ray's session directory stays /tmp/ray.
        self.scratch = Path(tempfile.mkdtemp(prefix="annotator-blind-scratch-"))
        self.hidden = [*self.hidden, self.scratch]
        self.env = {**self.env, "TMPDIR": str(self.scratch), "RAY_TMPDIR": "/tmp"}

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.gcs_port}"

    @property
    def dashboard(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    def _env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        env = {**os.environ, **self.env, **self.auth, **(extra or {})}
        env.pop("RAY_ADDRESS", None)
        return env

    def _start(self, name: str, args: list[str], env: dict[str, str] | None) -> BlindNode:
        """``ray start … --block`` in a mount namespace of its own, every hidden directory
        covered by an empty tmpfs there."""
        hide = " ".join(
            f"mount -t tmpfs -o size=16g,mode=0755 blind-{name} {shlex.quote(str(d))};"
            for d in self.hidden
        )
        workers = self._ports
        self._ports += 1000
        ports = [
            f"--min-worker-port={workers}",
            f"--max-worker-port={workers + 999}",
            f"--dashboard-agent-listen-port={free_port()}",
            f"--dashboard-agent-grpc-port={free_port()}",
            f"--metrics-export-port={free_port()}",
            f"--runtime-env-agent-port={free_port()}",
        ]
        command = [str(BIN / "ray"), "start", "--block", "--node-ip-address=127.0.0.1"]
        command += [*ports, *args, f"--resources={json.dumps({name: 1})}"]
        script = f"set -e; {hide} exec {shlex.join(command)}"
        log = self.logs / f"{name}.log"
        handle = log.open("w")
        process = subprocess.Popen(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
            env=self._env(env),
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        node = BlindNode(name, process, log=log)
        self.nodes.append(node)
        return node

    def start_head(self, **resources) -> BlindNode:
        self.gcs_port, self.dashboard_port = free_port(), free_port()
        args = [
            "--head",
            f"--port={self.gcs_port}",
            f"--dashboard-port={self.dashboard_port}",
            "--dashboard-host=127.0.0.1",
            "--include-dashboard=true",
            f"--ray-client-server-port={free_port()}",
            f"--num-cpus={resources.get('num_cpus', 0)}",
            f"--memory={resources.get('memory', 4 * GIB)}",
            f"--object-store-memory={resources.get('object_store_memory', 200 * 1024**2)}",
        ]
        head = self._start("head", args, None)
        self._wait_for(head)
        self._forget_current_cluster()
        return head

    def _forget_current_cluster(self) -> None:
        """`ray start --head` names itself the machine's current cluster (by the machine's
        address, not 127.0.0.1), which any later plain ``ray.init()`` of another process (a
        subprocess ``annotator annotate``) would join instead of starting its own."""
        current = Path("/tmp/ray/ray_current_cluster")
        with contextlib.suppress(FileNotFoundError):
            if current.read_text().strip().endswith(f":{self.gcs_port}"):
                current.unlink()

    def add_worker(
        self,
        num_cpus: int = 2,
        memory: int = 5 * GIB,
        object_store_memory: int = 200 * 1024**2,
        env: dict[str, str] | None = None,
    ) -> BlindNode:
        # Never a name used before: a killed node stays "alive" in the GCS's table for a while.
        self._started += 1
        name = f"worker-{self._started}"
        args = [
            f"--address={self.address}",
            f"--num-cpus={num_cpus}",
            f"--memory={memory}",
            f"--object-store-memory={object_store_memory}",
        ]
        node = self._start(name, args, env)
        self._wait_for(node)
        return node

    def _wait_for(self, node: BlindNode, timeout_s: float = 180.0) -> None:
        """Until the node is alive in the cluster's node table; sets its node id."""
        deadline = time.monotonic() + timeout_s
        probe = (
            f"import json, ray; ray.init(address={self.address!r}, log_to_driver=False); "
            "print('NODES', json.dumps([[n['NodeID'], n['Resources']] for n in ray.nodes() "
            "if n['Alive']]))"
        )
        while time.monotonic() < deadline:
            if node.process.poll() is not None:
                raise RuntimeError(f"{node.name} exited:\n{node.log.read_text()[-3000:]}")
            done = subprocess.run(
                [sys.executable, "-c", probe],
                env=self._env(),
                capture_output=True,
                text=True,
                timeout=120,
            )
            found = [line for line in done.stdout.splitlines() if line.startswith("NODES ")]
            if done.returncode == 0 and found:
                for node_id, resources in json.loads(found[-1].removeprefix("NODES ")):
                    if node.name in resources:
                        node.node_id = node_id
                        return
            time.sleep(1.0)
        raise RuntimeError(f"{node.name} did not join:\n{node.log.read_text()[-3000:]}")

    def kill(self, node: BlindNode) -> None:
        """Every process of the node, SIGKILLed at once, as a crashed machine."""
        import psutil

        try:
            root = psutil.Process(node.process.pid)
            victims = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            victims = []
        for proc in victims:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.kill()
        node.process.wait(timeout=60)
        self.nodes.remove(node)

    def workers(self) -> list[BlindNode]:
        return [n for n in self.nodes if n.name.startswith("worker")]

    @contextlib.contextmanager
    def connected(self):
        """This process as a driver of the cluster (with its token), disconnected after."""
        import ray

        if ray.is_initialized():
            ray.shutdown()
        try:
            ray.init(address=self.address, log_to_driver=False)
            yield ray
        finally:
            ray.shutdown()

    def submit(self, *entrypoint: str, timeout_s: float = 900) -> str:
        """``ray job submit`` (the real client, with the cluster's token) of ``entrypoint``;
        the job runs on the head, blind like the rest. Returns the job's log; fails unless the
        job SUCCEEDED."""
        import re

        command = [str(BIN / "ray"), "job", "submit", "--address", self.dashboard, "--"]
        t0 = time.perf_counter()
        done = subprocess.run(
            [*command, *entrypoint],
            env=self._env(),
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )
        # The client follows the job's log and exits non-zero unless the job SUCCEEDED.
        assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
        assert re.search(r"Job '(raysubmit_\w+)' succeeded", done.stdout), done.stdout[-3000:]
        print(f"job {' '.join(entrypoint[2:5])}: {time.perf_counter() - t0:.0f} s")
        return done.stdout

    def shutdown(self) -> None:
        for node in reversed(list(self.nodes)):
            self.kill(node)
        self._forget_current_cluster()
        shutil.rmtree(self.scratch, ignore_errors=True)
