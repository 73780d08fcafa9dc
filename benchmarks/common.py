"""Shared bits of the benchmark harness: machine description and JSON results."""

from __future__ import annotations

import functools
import json
import os
import platform
import resource
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"


def machine() -> dict[str, Any]:
    import torch

    mem_kb = 0
    try:
        with open("/proc/meminfo") as handle:
            mem_kb = int(handle.readline().split()[1])
    except OSError:
        pass
    return {
        "cpus": os.cpu_count(),
        "memory_gib": round(mem_kb / 1024**2, 1),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def peak_rss_mib() -> float:
    """Peak resident set size of this process (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def write_result(name: str, figures: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    payload = {
        "benchmark": name,
        "at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine(),
        **figures,
    }
    path.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
    print(json.dumps(payload, indent=2, sort_keys=True))
    return path


@functools.cache
def _stage_titles() -> dict[str, str]:
    """Process titles Ray gives the pipeline's workers → the stage they run, from the graph's
    own tables (pipeline/graph.py and every kind's stages): an actor's process is named after its
    class, a task's after its operator (a read task after the datasource's name)."""
    from annotator.kinds import stage_specs
    from annotator.pipeline import graph, inputs, warmup

    stages = {"asr": graph.ASRStage}
    stages.update({name: spec.actor_class() for name, spec in stage_specs().items()})
    listing = inputs.source_listing([], None, None).get_name()
    return {
        **{cls.__name__: name for name, cls in stages.items()},
        f"MapBatches({graph.decode.__name__})": "decode",
        f"Read{listing}": "listing",
        warmup.WorkArrived.__name__: "ray",  # the run's start flag, an actor of Ray's
        "ray::": "ray",
        "/ray/": "ray",
    }


_RETITLED = {"ray", "decode", "listing"}  # Ray task workers: the title is the current task's


def _stage_of(proc, driver: int) -> str | None:
    """The stage a process works for: its own title's, else its nearest ancestor's (vLLM's
    engine-core process under a label actor); the driver; None for processes outside the run."""
    import psutil

    try:
        for p in (proc, *proc.parents()):
            if p.pid == driver:
                return "driver"
            title = " ".join(p.cmdline())
            for key, stage in _stage_titles().items():
                if key in title:
                    return stage
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        pass
    return None


def _gpu_memory_mib() -> tuple[dict[int, float], float] | None:
    """(GPU memory per process id, memory used on all GPUs) from nvidia-smi, in MiB; None where
    it does not run. In a container the per-process list may be empty (another PID namespace)."""
    import subprocess

    def query(*args: str) -> list[list[str]]:
        out = subprocess.run(
            ["nvidia-smi", *args, "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
        return [[f.strip() for f in line.split(",")] for line in out.splitlines() if line.strip()]

    try:
        per_process = {int(p): float(m) for p, m in query("--query-compute-apps=pid,used_memory")}
        used = sum(float(m) for (m,) in query("--query-gpu=memory.used"))
    except (OSError, subprocess.SubprocessError, ValueError):
        return None
    return per_process, used


class StageSampler:
    """CPU seconds and peak GPU memory of a run, per pipeline stage, sampled in a thread.

    Every ``interval`` seconds each process on the machine is attributed to a stage by its
    process title (Ray names actor processes after their class, task workers after their
    operator) or its ancestors', the driver, or ``ray`` (Ray's own processes, idle workers).
    CPU seconds are counted from the sampler's start, each interval's to the stage the process
    worked for then; a process that exits between samples loses at most ``interval`` of it.
    GPU memory: per stage the largest any one of its processes held (what the plan in
    cluster/paper.yaml gives per actor), and the largest total used on the machine's GPUs, from
    nvidia-smi; both stay empty where it does not run.
    """

    def __init__(self, interval: float = 1.0) -> None:
        import os

        self.interval = interval
        self.driver = os.getpid()
        self._cpu: dict[int, float] = {}  # last CPU seconds seen per process
        self._fixed: dict[int, str | None] = {}  # processes whose stage cannot change
        self._totals: dict[str, float] = {}
        self.gpu_peak_mib: dict[str, float] = {}
        self.gpu_used_peak_mib: float | None = None
        self._own_cpu_s = 0.0
        self._stop = None
        self._thread = None

    def _sample(self, first: bool = False) -> None:
        """Add each process's CPU time since the last sample to the stage it works for now (a
        Ray worker runs a decode task, then idles as ``ray``)."""
        import psutil

        memory = _gpu_memory_mib()
        for proc in psutil.process_iter():
            try:
                times = proc.cpu_times()
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
            stage = self._fixed.get(proc.pid, "")
            if stage == "":
                stage = _stage_of(proc, self.driver)
                # A model actor, the driver or an outside process stays what it is; a task
                # worker's title changes with each task, so only those are read again.
                if stage not in _RETITLED:
                    self._fixed[proc.pid] = stage
            if stage is None:
                continue
            cpu = times.user + times.system
            before = self._cpu.get(proc.pid, cpu if first else 0.0)
            self._cpu[proc.pid] = cpu
            self._totals[stage] = self._totals.get(stage, 0.0) + max(0.0, cpu - before)
            if memory is not None and proc.pid in memory[0]:
                peak = self.gpu_peak_mib.get(stage, 0.0)
                self.gpu_peak_mib[stage] = max(peak, memory[0][proc.pid])
        if memory is not None:
            self.gpu_used_peak_mib = max(self.gpu_used_peak_mib or 0.0, memory[1])

    def __enter__(self) -> StageSampler:
        import threading

        self._sample(first=True)
        self._stop = threading.Event()

        def loop() -> None:
            while not self._stop.wait(self.interval):
                self._sample()
            self._own_cpu_s = time.thread_time()  # this thread's own CPU, counted as the driver's

        self._thread = threading.Thread(target=loop, name="stage-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def cpu_s(self) -> dict[str, float]:
        """CPU seconds per stage since the sampler started, largest first; the sampler's own
        (it runs in the driver process) apart, as ``sampler``."""
        totals = dict(self._totals)
        totals["driver"] = totals.get("driver", 0.0) - self._own_cpu_s
        totals["sampler"] = self._own_cpu_s
        return {k: round(v, 1) for k, v in sorted(totals.items(), key=lambda kv: -kv[1])}
