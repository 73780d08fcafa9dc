"""``annotator demo``: the whole product on the embedded default, offline, on the CPU.

1. a small synthetic archive (two podcast episodes as loose files, two stereo calls in a tar);
2. the small profile trained in two stages on a synthetic espeak-ng corpus (cached);
3. the archive annotated on a local Ray cluster with vLLM (the files table makes a rerun quick);
4. three named SQL queries printed; 5. the HTML report written.

Everything lives under ``ANNOTATOR_HOME/demo`` and is reused by the next run.
"""

from __future__ import annotations

import shutil
import tarfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from annotator.config import AnnotatorConfig, load_config

if TYPE_CHECKING:
    from annotator.models.bundle import Bundle

DEMO_RECIPE = 1  # bump when the demo corpus or training recipe changes: caches are rebuilt
NOTICE = (
    "The demo's emotion model is trained on synthetic espeak-ng speech whose emotions are carried "
    "by wording and prosody. Its labels show the machinery working, not real emotion recognition."
)
QUERIES = [
    ("emotion_summary", {}),
    ("angriest_call_endings", {"label": "angry", "last_s": 30}),
    ("run_history", {}),
]


def _episode(lines: list[tuple[str, str]], voice: str) -> np.ndarray:
    from annotator.audio.synth import silence, speak
    from training.synthetic_corpora import SYNTH_PROSODY

    parts = []
    for label, text in lines:
        parts += [speak(text, voice=voice, **SYNTH_PROSODY[label]), silence(1.2)]
    return np.concatenate(parts)


def _call(turns: list[tuple[int, str, str]]) -> np.ndarray:
    """Stereo: channel 0 the agent, channel 1 the caller, taking turns."""
    from annotator.audio.synth import silence, speak
    from training.synthetic_corpora import SYNTH_PROSODY

    voices = ["en-us", "en-gb+f4"]
    channels: list[list[np.ndarray]] = [[], []]
    for speaker, label, text in turns:
        audio = np.concatenate(
            [speak(text, voice=voices[speaker], **SYNTH_PROSODY[label]), silence(1.0)]
        )
        channels[speaker].append(audio)
        channels[1 - speaker].append(silence(len(audio) / 16_000))
    return np.stack([np.concatenate(c) for c in channels])


def make_corpus(root: Path) -> Path:
    """The demo archive (built once): loose episodes and a tar of two stereo calls."""
    from annotator.audio.synth import encode
    from training.synthetic_corpora import SYNTH_WORDS as W

    done = root / ".complete"
    if done.is_file():
        return root
    root.mkdir(parents=True, exist_ok=True)
    encode(
        _episode(
            [
                ("happy", W["happy"][0]),
                ("neutral", W["neutral"][1]),
                ("happy", W["happy"][3]),
                ("sad", W["sad"][2]),
            ],
            "en-us+m3",
        ),
        root / "podcasts" / "episode-01.mp3",
    )
    encode(
        _episode(
            [
                ("neutral", W["neutral"][0]),
                ("sad", W["sad"][0]),
                ("sad", W["sad"][4]),
                ("neutral", W["neutral"][5]),
            ],
            "en-gb",
        ),
        root / "podcasts" / "episode-02.wav",
    )
    calls = root / "staging"
    encode(
        _call(
            [
                (0, "neutral", "thank you for calling, how can I help"),
                (1, "angry", W["angry"][0]),
                (0, "neutral", W["neutral"][3]),
                (1, "angry", W["angry"][1]),
            ]
        ),
        calls / "call-0001.wav",
    )
    encode(
        _call(
            [
                (0, "neutral", "good morning, you are speaking with support"),
                (1, "happy", W["happy"][2]),
                (0, "happy", W["happy"][5]),
                (1, "neutral", W["neutral"][2]),
            ]
        ),
        calls / "call-0002.flac",
    )
    with tarfile.open(root / "calls-2026-11-21.tar", "w") as tar:
        for name in ("call-0001.wav", "call-0002.flac"):
            tar.add(calls / name, arcname=f"calls/{name}")
            (calls / name).unlink()
    calls.rmdir()
    done.write_text(str(DEMO_RECIPE))
    return root


def trained_bundle(home: Path, config: AnnotatorConfig, say: Callable[[str], None]) -> Bundle:
    """The demo bundle: reused when present and built by this recipe, else trained (minutes)."""
    from annotator.kinds.emoq.export import export_bundle
    from annotator.kinds.emoq.stage1 import train_stage1
    from annotator.kinds.emoq.stage2 import train_stage2
    from annotator.models.bundle import Bundle, BundleError
    from training.synthetic_corpora import synthetic_corpus

    root = home / "demo" / "bundle"
    try:
        cached = Bundle.load(root)  # hashes every file: loaded once, handed to the caller
        if cached.extra.get("demo_recipe") == DEMO_RECIPE:
            say(f"reusing the trained demo bundle at {root}")
            return cached
    except BundleError:
        pass
    work = home / "demo" / "training"
    say("making the synthetic training corpus (espeak-ng, six voices, four emotions)")
    manifest = synthetic_corpus(work / "corpus")
    t0 = time.perf_counter()
    say("training stage 1 (EmoQ-Former + MAL) on Ray Train, 2 CPU workers")
    runs = [f"demo-{DEMO_RECIPE}-stage1", f"demo-{DEMO_RECIPE}-stage2"]
    stage1 = train_stage1(config, manifest, work / "stage1", name=runs[0])
    say("training stage 2 (EmoQ-Former + projector + LoRA, weighted LM loss)")
    checkpoint = train_stage2(config, manifest, stage1, name=runs[1])
    bundle = export_bundle(
        config, stage1, checkpoint, root, extra={"demo_recipe": DEMO_RECIPE, "synthetic": True}
    )
    say(f"trained in {time.perf_counter() - t0:.0f} s → bundle {bundle.version}")
    # The bundle is what the demo keeps; its checkpoints (weights + optimizer state, ~300 MB
    # each) would only serve to resume a stopped training run.
    for run in runs:
        shutil.rmtree(Path(config.train.storage, run), ignore_errors=True)
    return bundle


def run_demo(home: Path | None = None, say: Callable[[str], None] = print) -> dict:
    """Run the demo; returns the paths and the run summary."""
    from annotator.models.profiles import build_small_profile
    from annotator.pipeline.run import annotate
    from annotator.query import Annotations
    from annotator.query.cli import print_relation
    from annotator.report.html import write_report

    base = load_config()
    home = Path(home or base.models.home)
    say(NOTICE)
    # The small profile the demo trains from (quick when already built and intact).
    build_small_profile(home, on_step=lambda step: say(f"small profile: {step}"))
    corpus = make_corpus(home / "demo" / "corpus")
    train_config = load_config(
        None, models={"home": str(home)}, train={"storage": str(home / "demo" / "checkpoints")}
    )
    bundle = trained_bundle(home, train_config, say)
    # One output per bundle: a retrained demo model labels afresh instead of skipping files.
    out = home / "demo" / f"out-{bundle.version}"
    config = load_config(
        None,
        output=str(out),
        models={"home": str(home), "bundle": str(bundle.root)},
        audio={"channels": "split"},
    )
    from annotator.output.legacy import convert
    from annotator.output.tables import OutputTables

    if OutputTables(str(out)).is_legacy():  # a demo output written by annotator 0.1
        say(f"converting {out} to Delta tables (annotator convert)")
        convert(str(out))
    say(f"annotating {corpus} → {out}")
    summary = annotate(config, [str(corpus / "podcasts"), str(corpus / "calls-2026-11-21.tar")])
    for line in summary.lines():
        say(line)
    ann = Annotations(str(out))
    for name, params in QUERIES:
        say(f"\n-- {name} {params or ''}".rstrip())
        print_relation(ann.named(name, **params))
    report = write_report(str(out), home / "demo" / "report.html")
    say(f"\nreport: {report}\nquery it yourself: annotator query {out} --list")
    say(NOTICE)
    return {"output": out, "report": report, "bundle": bundle.root, "summary": summary}
