"""Ray job entrypoint: both training stages and the export, then an evaluation.

Training and the evaluation run on Ray workers; the driver only reads the final checkpoint's
tensors to write the bundle (no base LLM in its memory).

    RAY_AUTH_MODE=token RAY_AUTH_TOKEN=... \
    ray job submit --address http://HEAD:8265 -- \
        python -m jobs.retrain --manifest s3://annotations/review/reviewed.jsonl \
        --out /tmp/emoq-2026-11 --promote current --config /etc/annotator/paper.yaml

Checkpoints go to ``train.storage`` (local or s3://); resubmitting the same job resumes the
stopped stage from its newest checkpoint. ``RAY_ADDRESS`` (set by Ray jobs) names the cluster.
On a cluster whose nodes share no disk, the manifest and its audio are ``s3://``, the workers
get the stage-1 weights through ``train.storage``, and the bundle (written to ``--out`` on the
head's own disk) reaches serving through the registry: ``--push`` uploads it as a version of
``models.registry``, ``--promote current`` also points ``current`` at it, and the next run with
``models.bundle: registry:current`` serves it.

The cluster runs with token authentication: the client needs the cluster's token
(cluster/README.md, "The job-submission token").
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from annotator.config import load_config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Two-stage EmoQ retraining on Ray Train.")
    parser.add_argument("--manifest", required=True, help="a manifest file or s3:// URI")
    parser.add_argument("--out", required=True, type=Path, help="bundle directory to write")
    parser.add_argument("--config", type=Path, default=None)
    parser.add_argument("--name", default="retrain", help="run name prefix under train.storage")
    parser.add_argument("--push", action="store_true", help="push the bundle to models.registry")
    parser.add_argument("--promote", metavar="NAME", help="push it and point NAME at it")
    args = parser.parse_args(argv)

    from annotator.cli_bundles import publish
    from annotator.kinds.emoq.export import export_bundle
    from annotator.kinds.emoq.stage1 import train_stage1
    from annotator.kinds.emoq.stage2 import train_stage2
    from training.data import read_manifest
    from training.evaluate import evaluate_on_ray

    config = load_config(args.config)
    stage1 = train_stage1(
        config, args.manifest, args.out.with_name(args.out.name + "-stage1"), f"{args.name}-stage1"
    )
    checkpoint = train_stage2(config, args.manifest, stage1, f"{args.name}-stage2")
    bundle = export_bundle(config, stage1, checkpoint, args.out, {"manifest": str(args.manifest)})
    print(f"bundle {bundle.version} written to {bundle.root}", flush=True)
    held_out = [e for e in read_manifest(args.manifest, s3=config.s3) if e.split == "test"]
    if held_out:
        result = evaluate_on_ray(
            config, bundle.root, held_out, args.out.with_name(args.out.name + "-eval")
        )
        print(json.dumps({k: result[k] for k in ("examples", "wa", "ua", "wf1")}), flush=True)
    publish(config, bundle.root, args.push, args.promote)
    return 0


if __name__ == "__main__":
    sys.exit(main())
