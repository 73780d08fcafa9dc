"""Where does the prosody go? Linear probes along EmoQ's audio path on the prosody-only corpus
(the same neutral sentences for every emotion; pitch, rate and loudness carry it), held-out
voices, UA (chance 0.25):

- the small profile's HuBERT frames, mean-pooled and mean+std-pooled: does the encoder keep it?
- e of the EmoQ-Former as initialised, and after stage 1 (MAL, the configured schedule) with the
  frames as they come and standardised by the training split's statistics (what stage 1 does,
  ``common.frame_statistics``): does the path from frames to e keep it?

For each e: a logistic-regression probe's UA, the UA of the nearest training-class centroid
(what SupCon shapes e for) and the mean cosine between the items' e (1.0: every clip has the same
e, so the projector and the LLM get one input whatever is said how). Stage 1 runs here in one
process, the loss and optimiser of ``annotator/kinds/emoq/stage1.py``, on held frames.

    python -m benchmarks.audio_probe
"""

from __future__ import annotations

import copy
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import write_result


def _probe(x: np.ndarray, y: np.ndarray, train: np.ndarray) -> float:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000))
    clf.fit(x[train], y[train])
    return round(float(balanced_accuracy_score(y[~train], clf.predict(x[~train]))), 3)


def _e_figures(e: np.ndarray, y: np.ndarray, train: np.ndarray) -> dict[str, float]:
    from sklearn.metrics import balanced_accuracy_score

    centroids = np.stack([e[train & (y == k)].mean(0) for k in range(int(y.max()) + 1)])
    nearest = (e[~train] @ centroids.T).argmax(1)
    return {
        "probe_ua": _probe(e, y, train),
        "centroid_ua": round(float(balanced_accuracy_score(y[~train], nearest)), 3),
        "mean_cosine": round(float((e @ e.T).mean()), 4),
    }


def main() -> None:
    import torch

    from annotator.config import load_config
    from annotator.kinds.emoq.stage1 import build
    from annotator.schema import label_set
    from training import common, losses
    from training.data import read_manifest
    from training.synthetic_corpora import synthetic_corpus

    torch.set_num_threads(2)
    config = load_config(None, train={"features": "memory"})
    train_cfg = config.train
    labels = list(label_set(train_cfg.label_set))
    with tempfile.TemporaryDirectory() as tmp:
        manifest = synthetic_corpus(Path(tmp) / "prosody", carries="prosody")
        examples = read_manifest(manifest)
        items = common.featurize(examples, labels, config)
    y = np.array([i.label for i in items])
    train = np.array([e.split == "train" for e in examples])
    frames, frame_mask = common.pad_frames(items)
    pooled = [i.frames.numpy() for i in items]
    results: dict = {
        "clips": {"train": int(train.sum()), "held_out": int((~train).sum())},
        "frames": {
            "mean_pooled_probe_ua": _probe(np.stack([f.mean(0) for f in pooled]), y, train),
            "mean_std_pooled_probe_ua": _probe(
                np.stack([np.concatenate([f.mean(0), f.std(0)]) for f in pooled]), y, train
            ),
        },
    }
    torch.manual_seed(train_cfg.seed)
    start, tokenizer = build(config, labels)
    ids, text_mask = tokenizer([i.text for i in items])
    train_items = [i for i, t in zip(items, train, strict=True) if t]
    statistics = common.frame_statistics([common.pad_frames(train_items)], "cpu")

    def embed(former) -> np.ndarray:
        former.eval()
        with torch.no_grad():
            return former(frames, frame_mask, ids, text_mask).numpy()

    results["e_initialised"] = _e_figures(embed(start.former), y, train)
    weights = losses.class_weights(list(y[train]), len(labels))
    index = np.flatnonzero(train)
    for standardised in (False, True):
        model = copy.deepcopy(start)
        if standardised:
            model.former.set_frame_statistics(*statistics)
        optimizer = torch.optim.AdamW(
            [p for p in model.parameters() if p.requires_grad], lr=train_cfg.lr_stage1
        )
        losses_by_epoch = []
        t0 = time.perf_counter()
        for epoch in range(train_cfg.epochs_stage1):
            model.train()
            order = np.random.default_rng(train_cfg.seed + epoch).permutation(index)
            total, steps = 0.0, 0
            for s in range(0, len(order) - train_cfg.batch_size + 1, train_cfg.batch_size):
                b = torch.as_tensor(order[s : s + train_cfg.batch_size])
                e, logits = model(frames[b], frame_mask[b], ids[b], text_mask[b])
                loss = losses.stage1_loss(
                    train_cfg.stage1_loss,
                    e,
                    logits,
                    torch.as_tensor(y[b]),
                    train_cfg.temperature,
                    train_cfg.gamma,
                    train_cfg.mal_lambda,
                    weights,
                )
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                total, steps = total + loss.item(), steps + 1
            losses_by_epoch.append(round(total / steps, 3))
        name = "e_stage1_standardised_frames" if standardised else "e_stage1_raw_frames"
        results[name] = {
            **_e_figures(embed(model.former), y, train),
            "loss_first_last_epoch": [losses_by_epoch[0], losses_by_epoch[-1]],
            "train_s": round(time.perf_counter() - t0, 1),
        }
        print(name, results[name], flush=True)
    write_result(
        "audio_probe",
        {"chance_ua": 0.25, "epochs_stage1": train_cfg.epochs_stage1, **results},
    )


if __name__ == "__main__":
    main()
