"""benchmarks.common.StageSampler, whose CPU seconds per stage the README quotes: a process is
counted to the stage its title names (as Ray names an actor's process after its class), and its
children to the same stage (vLLM's engine-core process under a label actor)."""

from __future__ import annotations

import subprocess
import sys

from benchmarks.common import StageSampler

# Burns ~1.5 s of CPU in a child process titled like a label actor's (argv[1]), or in a
# grandchild when argv[2] is "child".
BURN = """
import subprocess, sys, time
if len(sys.argv) > 2 and sys.argv[2] == "child":
    subprocess.run([sys.executable, "-c", "import time\\nt = time.process_time()\\n"
                    "while time.process_time() - t < 1.5: pass"], check=True)
else:
    t = time.process_time()
    while time.process_time() - t < 1.5:
        pass
"""


def _burn(title: str, *extra: str) -> None:
    subprocess.run([sys.executable, "-c", BURN, title, *extra], check=True)


def test_cpu_seconds_go_to_the_stage_in_the_process_title_and_to_its_children():
    with StageSampler(interval=0.2) as sampler:
        _burn("ray::MapWorker(MapBatches(LabelStage))")
        _burn("ray::MapWorker(MapBatches(ASRStage))", "child")
        _burn("ray::ReadListSources")  # a listing task, as Ray titles the read of inputs.py
    cpu = sampler.cpu_s()
    assert 1.2 <= cpu.get("label", 0) <= 2.5, cpu
    assert 1.2 <= cpu.get("asr", 0) <= 2.5, cpu  # the untitled grandchild counts for its parent
    assert 1.2 <= cpu.get("listing", 0) <= 2.5, cpu
    assert cpu.get("features", 0) == 0
