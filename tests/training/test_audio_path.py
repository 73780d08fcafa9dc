"""EmoQ's audio path learns what only the audio carries: stage 1 on Ray Train (2 CPU workers) over
the synthetic corpus whose emotion is in the prosody alone (every emotion speaks the same neutral
sentences), e scored on the held-out voices.

With the frames standardised (train.standardise_frames: EmoQFormer.frame_mean / frame_inv_std);
without it every clip's e pointed the same way (mean cosine 1.000) and the stage-1 loss did not
fall (benchmarks/audio_probe.py; README, "Which input does the model learn from?")."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from annotator.config import load_config
from training.data import read_manifest


@pytest.fixture(scope="session")
def prosody_manifest(tmp_path_factory):
    from training.synthetic_corpora import synthetic_corpus

    return synthetic_corpus(tmp_path_factory.mktemp("prosody"), carries="prosody")


def test_stage1_learns_the_emotion_only_the_prosody_carries(
    prosody_manifest, small_home, ray_local, tmp_path
):
    """The transcript is the same for every emotion, so e can only separate the held-out
    voices' emotions through the audio: their nearest training-class centroid names the emotion
    well above chance (0.25), and the e are spread, not one direction. The frame statistics the
    trained former holds are the training split's (set before the first step)."""
    from sklearn.metrics import balanced_accuracy_score

    from annotator.kinds.emoq.emoq_former import EmoQFormer
    from annotator.kinds.emoq.stage1 import train_stage1
    from annotator.models.transcript import TranscriptTokenizer
    from annotator.schema import label_set
    from training import common

    config = load_config(
        None,
        models={"home": str(small_home)},
        train={
            "storage": str(tmp_path / "checkpoints"),
            "epochs_stage1": 8,
            "standardise_frames": True,
        },
    )
    former = EmoQFormer.load(train_stage1(config, prosody_manifest, tmp_path / "stage1")).eval()

    examples = read_manifest(prosody_manifest)
    memory = config.model_copy(
        update={"train": config.train.model_copy(update={"features": "memory"})}
    )
    items = common.featurize(examples, list(label_set(config.train.label_set)), memory)
    train = np.array([e.split == "train" for e in examples])
    y = np.array([i.label for i in items])
    assert len({e.transcript for e in examples}) == 6  # the same six sentences for every emotion
    frames, mask = common.pad_frames(items)
    ids, text_mask = TranscriptTokenizer.load(
        common.model_path(config.models.text_encoder, config)
    )([i.text for i in items])
    with torch.no_grad():
        e = former(frames, mask, ids, text_mask).numpy()
    centroids = np.stack([e[train & (y == k)].mean(0) for k in range(4)])
    ua = balanced_accuracy_score(y[~train], (e[~train] @ centroids.T).argmax(1))
    cosine = float((e @ e.T).mean())
    print(f"held-out centroid UA {ua:.3f}, mean cosine between the e {cosine:.3f}")
    assert ua >= 0.5
    assert cosine < 0.9

    real = frames[torch.as_tensor(train)][mask[torch.as_tensor(train)]].double()
    torch.testing.assert_close(former.frame_mean.detach(), real.mean(0).float(), atol=0.05, rtol=0)
