"""Stage 1 on 3 Ray Train workers over a training split that does not divide evenly: the run
finishes, every rank takes the same number of steps, and every step holds the global batch."""

from __future__ import annotations

import json
from pathlib import Path

from annotator.config import load_config
from training.data import read_manifest, write_manifest


def test_three_workers_on_thirteen_examples_take_equal_full_steps(
    synth_manifest, small_home, ray_local, tmp_path
):
    from annotator.kinds.emoq.stage1 import train_stage1
    from training.common import latest_checkpoint

    # 13 examples over 3 workers is 5, 4, 4 each when dealt out one by one: at 2 per worker that
    # would be 3 steps on one rank and 2 on the others, and DDP's all-reduce would wait forever.
    train = [e for e in read_manifest(synth_manifest) if e.split == "train"][::7][:13]
    assert len(train) == 13
    manifest = write_manifest(train, tmp_path / "manifest.jsonl")
    config = load_config(
        None,
        models={"home": str(small_home)},
        train={
            "storage": str(tmp_path / "checkpoints"),
            "num_workers": 3,
            "cpus_per_worker": 0.5,
            "batch_size": 6,
            "epochs_stage1": 1,
            "keep_checkpoints": 1,
        },
    )
    train_stage1(config, manifest, tmp_path / "stage1", name="three-workers")

    checkpoint = latest_checkpoint(str(tmp_path / "checkpoints"), "three-workers")
    progress = json.loads(Path(checkpoint, "progress.json").read_text())
    # Shares padded to 5 each; the last incomplete batch of 2 is dropped: 2 steps per rank.
    assert progress["steps_per_rank"] == [2, 2, 2]
    assert progress["global_batch_min"] == progress["global_batch_max"] == 6
    assert (tmp_path / "stage1" / "emoq_former.json").is_file()
