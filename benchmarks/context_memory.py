"""Memory and time of the MiSTER-E context stage on one long recording (1 h, 4 h, 10 h).

    python -m benchmarks.context_memory [--hours 1 4 10] [--profiles paper paper-1024 small]

A recording holds one utterance every 5 s (4 h = 2,880). Random weights, float32, CPU, one
thread. Model sizes: ``paper`` (MisterEConfig's defaults, the published code's, over the
UtteranceHeadsConfig.dim-wide embeddings the bundle builder gives it), ``paper-1024`` (the same
over 1024-wide embeddings; 4 h only unless --wide-hours), ``small`` (the small profile's). For
each size and length, each in a fresh subprocess:

* ``windowed``: run_in_windows with ModelsConfig's context_window / context_overlap defaults
  (256 / 32), as the sink serves it;
* ``whole``: the model called once on every utterance (full mask), for comparison;
* ``windowed-mmap64k`` (paper only): the same under MALLOC_MMAP_THRESHOLD_=65536, which takes
  glibc's heap retention out of the figure (what is left is the model's own working set);
* ``sink`` (4 h only): ContextLabeller.label on a pyarrow table of the file's segment rows (two
  channels, shuffled), the sink's real code path.

The figure is the pass's own memory: VmRSS after the model is loaded, the inputs are built and a
16-utterance warm-up has run, then the peak RSS (VmHWM, reset through /proc/self/clear_refs) over
the pass; ``increase_mib`` is the difference. glibc's heap makes the small figures vary by tens
of MiB from run to run, so windowed and sink runs are repeated (--repeats) and the largest kept.
A run over --timeout is recorded as skipped. The whole run takes about 6 min on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import fields
from functools import partial
from pathlib import Path
from types import SimpleNamespace

from benchmarks.common import write_result

SECONDS_PER_UTTERANCE = 5
LABELS = ["neutral", "angry", "sad", "happy"]
MALLOC = {"MALLOC_MMAP_THRESHOLD_": "65536"}  # glibc: no dynamic threshold, big blocks unmapped


def profiles() -> dict[str, dict]:
    """MisterEConfig keyword arguments per model size."""
    from annotator.kinds.mister_e import untrained
    from annotator.kinds.mister_e.utterances import UtteranceHeadsConfig

    dim = {f.name: f.default for f in fields(UtteranceHeadsConfig)}["dim"]
    layers = untrained.LAYERS
    return {
        "paper": {"speech_dim": dim, "text_dim": dim},  # MisterEConfig's defaults otherwise
        "paper-1024": {"speech_dim": 1024, "text_dim": 1024},
        "small": dict(  # as annotator/kinds/mister_e/untrained.py builds the small bundle
            speech_dim=untrained.DIM,
            text_dim=untrained.DIM,
            hidden=untrained.HIDDEN,
            gru_layers=layers,
            coattention_layers=layers,
            heads=4,
        ),
    }


def _status(key: str) -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {key} in /proc/self/status")


def segment_table(n: int, dim: int):
    """``n`` segment rows of one split call in arrival (shuffled) order, with embeddings."""
    import numpy as np
    import pyarrow as pa

    rng = np.random.default_rng(0)
    order = rng.permutation(n)
    emb = pa.list_(pa.float32())
    return pa.table(
        {
            "call_id": pa.array(["call-0"] * n, pa.string()),
            "start_s": pa.array((order * SECONDS_PER_UTTERANCE).astype(float), pa.float64()),
            "channel": pa.array(order % 2, pa.int16()),
            "segment_index": pa.array(order // 2, pa.int32()),
            "text": pa.array([f"utterance {i}" for i in order], pa.string()),
            "utterance_speech": pa.array(list(rng.standard_normal((n, dim), "float32")), emb),
            "utterance_text": pa.array(list(rng.standard_normal((n, dim), "float32")), emb),
        }
    )


def child(spec: dict) -> None:
    """One measurement in this (fresh) process; prints its figures as JSON."""
    import gc

    import torch

    from annotator.kinds.mister_e.model import MisterE, MisterEConfig
    from annotator.kinds.mister_e.windows import run_in_windows, windows

    torch.set_num_threads(1)
    torch.manual_seed(0)
    n, mode = spec["utterances"], spec["mode"]
    model = MisterE(MisterEConfig(num_labels=len(LABELS), labels=LABELS, **spec["config"])).eval()
    dim = model.config.speech_dim
    with tempfile.TemporaryDirectory() as tmp:
        if mode == "sink":
            from annotator.kinds.mister_e.context import ContextLabeller

            model.save(Path(tmp))
            bundle = SimpleNamespace(root=Path(tmp), labels=LABELS, temperature=1.0)
            labeller = ContextLabeller(bundle, spec["window"], spec["overlap"], 0.0)
            del model
            labeller.label(segment_table(16, dim))  # warm-up
            run = partial(labeller.label, segment_table(n, dim))
        else:
            speech, text = torch.randn(n, dim), torch.randn(n, dim)
            with torch.no_grad():  # warm-up
                model(speech[None, :16], text[None, :16], torch.ones(1, 16, dtype=torch.bool))
            if mode.startswith("windowed"):
                run = partial(run_in_windows, model, speech, text, spec["window"], spec["overlap"])
            else:
                run = partial(model, speech[None], text[None], torch.ones(1, n, dtype=torch.bool))
        gc.collect()
        load_peak, baseline = _status("VmHWM"), _status("VmRSS")
        with open("/proc/self/clear_refs", "w") as clear:
            clear.write("5")  # VmHWM := VmRSS
        start = time.perf_counter()
        with torch.no_grad():
            out = run()
        seconds = time.perf_counter() - start
        peak = _status("VmHWM")
    rows = out.num_rows if mode == "sink" else out["logits"].shape[-2]
    assert rows == n, (rows, n)
    figures = {
        "seconds": round(seconds, 2),
        "baseline_rss_mib": round(baseline, 1),
        "peak_rss_mib": round(peak, 1),
        "increase_mib": round(peak - baseline, 1),
        "load_peak_rss_mib": round(load_peak, 1),
        "windows": len(windows(n, spec["window"], spec["overlap"])) if mode != "whole" else 1,
    }
    print(json.dumps(figures))


def measure(spec: dict, timeout: float, repeats: int) -> dict:
    """The child's figures; over ``repeats`` runs, the largest increase and the least time."""
    command = [sys.executable, "-m", "benchmarks.context_memory", "--child", json.dumps(spec)]
    got = []
    for _ in range(repeats):
        try:
            env = {**os.environ, **MALLOC} if spec["mode"].endswith("-mmap64k") else None
            done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)
        except subprocess.TimeoutExpired:
            return {"skipped": f"over the {timeout:g} s limit"}
        if done.returncode:
            return {"skipped": f"exit {done.returncode}: {done.stderr.strip()[-300:]}"}
        got.append(json.loads(done.stdout.strip().splitlines()[-1]))
    out = max(got, key=lambda r: r["increase_mib"])
    out["seconds"] = min(r["seconds"] for r in got)
    if repeats > 1:
        out["increase_mib_runs"] = [r["increase_mib"] for r in got]
    return out


def conclusion(runs: dict, hours: list[float]) -> str:
    name = "paper" if "paper" in runs else next(iter(runs))
    got = runs[name]["runs"]

    def inc(h: float, mode: str) -> float | None:
        return got.get(f"{h:g}h-{mode}", {}).get("increase_mib")

    hours = sorted(hours)
    lo, hi = hours[0], hours[-1]
    windowed = [v for v in (inc(h, "windowed") for h in hours) if v is not None]
    text = (
        f"{name}: from {lo:g} h to {hi:g} h ({hi / lo:g}x the utterances) the windowed pass "
        f"needs {' -> '.join(f'{v:.0f}' for v in windowed)} MiB over its baseline"
    )
    fixed = [v for v in (inc(h, "windowed-mmap64k") for h in hours) if v is not None]
    if fixed:
        text += f" ({' -> '.join(f'{v:.0f}' for v in fixed)} MiB without glibc's heap retention)"
    if inc(lo, "whole") and inc(hi, "whole"):
        text += (
            f", the whole pass {inc(lo, 'whole'):.0f} -> {inc(hi, 'whole'):.0f} MiB "
            f"(x{inc(hi, 'whole') / inc(lo, 'whole'):.1f}, attention is quadratic)"
        )
    if inc(4, "windowed") and inc(4, "whole"):
        text += f"; at 4 h windowed {inc(4, 'windowed'):.0f} vs whole {inc(4, 'whole'):.0f} MiB"
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--hours", type=float, nargs="+", default=[1.0, 4.0, 10.0])
    parser.add_argument("--profiles", nargs="+", default=["paper", "paper-1024", "small"])
    parser.add_argument("--wide-hours", type=float, nargs="+", default=[4.0], help="paper-1024's")
    parser.add_argument("--timeout", type=float, default=240.0, help="seconds per measurement")
    parser.add_argument("--repeats", type=int, default=2, help="of the windowed and sink runs")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(json.loads(args.child))
        return
    from annotator.config import ModelsConfig
    from annotator.kinds.mister_e.model import MisterE, MisterEConfig

    window, overlap = ModelsConfig().context_window, ModelsConfig().context_overlap
    sizes, runs, load = profiles(), {}, os.getloadavg()[0]
    dim = sizes["paper"]["speech_dim"]
    table = [f"{'profile':<11}{'hours':>6}{'utts':>7}{'mode':>17}{'+MiB':>9}{'peak':>8}{'s':>8}"]
    print(table[0])
    for name in args.profiles:
        model = MisterE(MisterEConfig(num_labels=len(LABELS), **sizes[name]))
        params = sum(p.numel() for p in model.parameters())
        runs[name] = {"config": {**sizes[name], "parameters": params}, "runs": {}}
        for hours in args.wide_hours if name == "paper-1024" else args.hours:
            n = int(hours * 3600 / SECONDS_PER_UTTERANCE)
            modes = ["windowed", "whole"] + (["sink"] if hours == 4 else [])
            for mode in modes + (["windowed-mmap64k"] if name == "paper" else []):
                spec = {"config": sizes[name], "utterances": n, "mode": mode}
                repeats = 1 if mode == "whole" else args.repeats
                r = measure({**spec, "window": window, "overlap": overlap}, args.timeout, repeats)
                runs[name]["runs"][f"{hours:g}h-{mode}"] = {"utterances": n, **r}
                row = f"{name:<11}{hours:>6g}{n:>7}{mode:>17}"
                if "skipped" in r:
                    row += f"  skipped: {r['skipped'][:60]}"
                else:
                    row += f"{r['increase_mib']:>9.1f}{r['peak_rss_mib']:>8.0f}{r['seconds']:>8.1f}"
                table.append(row)
                print(row, flush=True)
    figures = {
        "load_average_1min_before_after": [load, os.getloadavg()[0]],
        "setup": f"one utterance every {SECONDS_PER_UTTERANCE} s; window {window}, overlap "
        f"{overlap}; float32, CPU, torch.set_num_threads(1), random weights",
        "profiles": runs,
        "sizes_note": "paper: MisterEConfig defaults (hidden 512, 3 GRU layers, 4 co-attention "
        f"layers, 8 heads) over UtteranceHeadsConfig.dim's default width ({dim}: what "
        "build_untrained_mister_e_bundle gives the context model as speech_dim/text_dim); "
        "paper-1024: the same over 1024-wide embeddings (only the convolutions grow); small: "
        "the small profile's SmallSizes",
        "method": "fresh subprocess per run; increase_mib = VmHWM over the pass (reset through "
        "/proc/self/clear_refs) minus VmRSS after model load, inputs and a 16-utterance warm-up; "
        "windowed/sink: the largest of --repeats runs, seconds the least; windowed-mmap64k: "
        "under MALLOC_MMAP_THRESHOLD_=65536 (glibc's heap retention taken out); sink = "
        "ContextLabeller.label on a shuffled pyarrow table of segment rows",
        "conclusion": conclusion(runs, args.hours),
    }
    write_result("context_memory", figures)
    print("\n".join([*table, figures["conclusion"]]))


if __name__ == "__main__":
    main()
