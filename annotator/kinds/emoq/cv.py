"""The paper's evaluation protocol as one job: every fold trained (stage 1, stage 2, export) and
scored as served, then mean ± std over the folds.

- IEMOCAP: the five leave-one-session-out folds (session k is the test split of fold k).
- MELD: its official split as one fold; stage 2 keeps the checkpoint with the best dev UA.

Each fold lives in ``OUT/<fold>/`` (manifest, stage-1 EmoQ-Former, bundle, ``eval/eval.json`` and
``eval/confusion.png``); ``OUT/summary.json`` holds every fold's WA/UA/WF1, their mean and
standard deviation, and the confusion matrix summed over the folds (``OUT/confusion.png``). A fold
whose ``eval.json`` exists is not run again, and a fold's training resumes from its newest
checkpoint (its run names are fixed by ``OUT``), so a stopped job is rerun with the same command.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from annotator.config import AnnotatorConfig
from training.data import Example, ManifestError, iemocap_manifest, meld_manifest, write_manifest
from training.metrics import confusion_png

METRICS = ("wa", "ua", "wf1")


def iemocap_folds(root: Path, sessions: Sequence[int] = (1, 2, 3, 4, 5)) -> list[tuple[str, Any]]:
    """(name, examples) of each leave-one-session-out fold."""
    folds = []
    for session in sessions:
        examples = iemocap_manifest(root, session)
        if not any(e.split == "test" for e in examples):
            raise ManifestError(f"{root}: Session{session} has no labelled utterances")
        folds.append((f"session{session}", examples))
    return folds


def meld_folds(root: Path, classes: int = 7) -> list[tuple[str, list[Example]]]:
    return [("meld", meld_manifest(root, classes))]


def run_cv(
    config: AnnotatorConfig,
    folds: Sequence[tuple[str, Sequence[Example]]],
    out: Path,
    on_fold: Callable[[str, dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Train every fold, then score every fold's bundle on its test split (and its dev split, if
    any) with one evaluation actor (one vLLM engine, each fold's adapter swapped in); returns and
    writes the summary."""
    from training.evaluate import evaluate_bundles_on_ray, write_evaluation

    out = Path(out).resolve()
    tag = hashlib.sha1(str(out).encode()).hexdigest()[:8]  # run names: one per OUT and fold
    results: dict[str, dict[str, Any]] = {}
    jobs: list[tuple[str, str, Path, list[Example]]] = []  # (fold, split, bundle, examples)
    chosen: dict[str, dict[str, Any]] = {}
    for name, examples in folds:
        fold = out / name
        done = fold / "eval" / "eval.json"
        if done.is_file():
            results[name] = json.loads(done.read_text())
            continue
        bundle, chosen[name] = _trained(config, name, examples, fold, f"cv-{tag}-{name}")
        for split in ("test", "dev"):  # dev (MELD) scored as served too, beside the checkpoint's
            part = [e for e in examples if e.split == split]
            if part or split == "test":
                jobs.append((name, split, bundle, part))
    scored = evaluate_bundles_on_ray(config, [(bundle, part) for _, _, bundle, part in jobs])
    by_fold: dict[str, dict[str, dict[str, Any]]] = {}
    for (name, split, _, _), result in zip(jobs, scored, strict=True):
        by_fold.setdefault(name, {})[split] = result
    for name, checkpoint in chosen.items():
        result = by_fold[name]["test"]
        result["checkpoint"] = checkpoint  # which epoch (and its dev scores, if any)
        if "dev" in by_fold[name]:
            result["dev"] = {k: by_fold[name]["dev"][k] for k in ("examples", *METRICS)}
        write_evaluation(result, out / name / "eval")
        results[name] = result
    for name, _ in folds:
        if on_fold is not None:
            on_fold(name, results[name])
    summary = summarize({name: results[name] for name, _ in folds})
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    confusion_png(
        np.asarray(summary["confusion"]),
        summary["labels"],
        out / "confusion.png",
        f"{len(results)} folds: UA {summary['mean']['ua']:.3f} ± {summary['std']['ua']:.3f}",
    )
    return summary


def _trained(
    config: AnnotatorConfig, name: str, examples: Sequence[Example], fold: Path, run: str
) -> tuple[Path, dict[str, Any]]:
    """The fold's bundle and the checkpoint it was exported from (``progress.json``): trained
    here, or found whole from an earlier run of the job (a stage-1 EmoQ-Former too)."""
    from annotator.kinds.emoq.emoq_former import EmoQFormer
    from annotator.kinds.emoq.export import export_bundle
    from annotator.kinds.emoq.stage1 import train_stage1
    from annotator.kinds.emoq.stage2 import train_stage2
    from annotator.models.bundle import Bundle, BundleError

    try:
        bundle = Bundle.load(fold / "bundle")
        return bundle.root, bundle.extra["checkpoint"]
    except (BundleError, KeyError):
        pass
    manifest = write_manifest(examples, fold / "manifest.jsonl")
    stage1 = fold / "stage1"
    try:
        EmoQFormer.load(stage1)
    except Exception:  # absent, or cut short by a kill: train it (its checkpoints resume)
        train_stage1(config, manifest, stage1, name=f"{run}-1")
    checkpoint = train_stage2(config, manifest, stage1, name=f"{run}-2")
    chosen = json.loads((Path(checkpoint) / "progress.json").read_text())
    extra = {"manifest": str(manifest), "fold": name, "checkpoint": chosen}
    return export_bundle(config, stage1, checkpoint, fold / "bundle", extra=extra).root, chosen


def summarize(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Per-fold WA/UA/WF1, their mean and standard deviation over the folds (numpy's ``std``:
    the population figure, as the paper's ± over five folds), and the summed confusion."""
    if not results:
        raise ValueError("no folds were run")
    labels = next(iter(results.values()))["labels"]
    table = {m: np.array([r[m] for r in results.values()]) for m in METRICS}
    return {
        "folds": {
            name: {
                **{m: r[m] for m in METRICS},
                "examples": r["examples"],
                "bundle_version": r["bundle_version"],
                "checkpoint": r.get("checkpoint"),
            }
            for name, r in results.items()
        },
        "mean": {m: float(v.mean()) for m, v in table.items()},
        "std": {m: float(v.std()) for m, v in table.items()},
        "labels": labels,
        "confusion": np.sum([r["confusion"] for r in results.values()], axis=0).tolist(),
    }
