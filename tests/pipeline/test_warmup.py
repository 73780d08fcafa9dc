"""The run's work-arrived flag: label engines start when the first window reaches ASR, never on
a run that has none."""

from __future__ import annotations

import threading

from annotator.pipeline.warmup import raise_flag, start_when_raised, work_arrived


def test_starts_wait_for_the_flag_then_all_run_once(ray_local):
    flag = work_arrived()
    started = []
    gate = threading.Event()

    def start(k):
        def run():
            started.append(k)
            gate.set()

        return run

    threads = [start_when_raised(flag, start(k)) for k in range(3)]
    # Nothing has raised the flag: no start can have run, however long the threads have waited.
    assert not gate.wait(timeout=2) and started == []
    assert all(t.is_alive() for t in threads)
    raise_flag(flag)
    raise_flag(flag)  # a restarted ASR actor raises it again: harmless
    for t in threads:
        t.join(timeout=60)
        assert not t.is_alive()
    assert sorted(started) == [0, 1, 2]
    # No flag (a stage built outside a run): nothing waits; the stage starts lazily.
    assert start_when_raised(None, start(9)) is None and 9 not in started
