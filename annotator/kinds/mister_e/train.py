"""Training a MiSTER-E bundle on Ray Train, in the paper's two stages.

* **Stage 1, utterances** (``stage1_loop``): the frozen speech and text encoders run once over
  each worker's share of the ``train`` split; the utterance heads (attentive pooling, projection,
  one classifier per modality: annotator/kinds/mister_e/utterances.py) learn each utterance's
  label alone, with focal loss (``train.gamma``) on both classifiers; schedule
  ``train.epochs_stage1`` / ``train.lr_stage1``.
* **Stage 2, conversations** (``stage2_loop``): the manifest's examples grouped into
  conversations (:func:`conversations`: the turns of one source file, in time order, both
  channels together); each worker embeds its share of them with the stage-1 heads (frozen now;
  their tensors reach the workers with the loop's config, not through a local path)
  and trains the context model (annotator/kinds/mister_e/model.py) on whole conversations with
  MiSTER-E's loss (``mister_e_loss`` below: focal on the mixture and on each
  expert, SupCon between the speech and text states, KL between the experts), padded utterances
  masked; schedule ``train.epochs_stage2`` / ``train.lr_stage2``; the global batch
  ``train.batch_size`` counts conversations.

Both stages split their items with equal steps on every rank (``common.shard_indices``,
``common.epoch_loader``), run with the batches on the worker's device, checkpoint every epoch
(a stopped run resumes) and are exported from the checkpoints' tensors.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from annotator.config import AnnotatorConfig
from training import common, losses
from training.data import Example
from training.losses import focal, supervised_contrastive


@dataclass(eq=False)
class Encoded:
    """One utterance as a worker holds it: its frozen encoders' real frames and tokens, held
    (``train.features: memory``) or computed with its batch (``source``; ``stream``)."""

    frames: torch.Tensor | None  # (frames, speech_dim): the speech encoder's real frames
    tokens: torch.Tensor | None  # (tokens, text_dim): the text encoder's real tokens
    label: int
    example: Example | None = None
    source: UtteranceSource | None = None


class UtteranceSource:
    """The frozen speech and text encoders over a batch of utterances, when the batch is drawn:
    the audio from the worker's ``common.ClipReader`` (a source read once while its utterances
    run), padded frames and tokens zero."""

    def __init__(self, speech, text, reader) -> None:
        self.speech, self.text, self.reader = speech, text, reader

    def batch(self, items: list[Encoded]) -> dict[str, torch.Tensor]:
        frames, frame_mask = self.speech([self.reader.audio(i.example) for i in items])
        tokens, token_mask = self.text([i.example.transcript for i in items])
        # Clones leave inference mode: the tensors feed a training forward.
        return {
            "frames": (frames * frame_mask[..., None].to(frames.dtype)).clone(),
            "frame_mask": frame_mask.clone(),
            "tokens": (tokens * token_mask[..., None].to(tokens.dtype)).clone(),
            "token_mask": token_mask.clone(),
            "labels": torch.tensor([i.label for i in items]),
        }


def conversations(examples: list[Example]) -> list[list[Example]]:
    """The examples grouped by recording (a file, or an archive's member), each group in time
    order (start, then channel): the two channels of a call are one conversation. An example
    without a span is a conversation of its own."""
    key = lambda e: (e.recording, e.start_s is None)  # noqa: E731
    out = []
    for (_, alone), group in itertools.groupby(sorted(examples, key=key), key=key):
        turns = list(group)
        if alone:
            out += [[t] for t in turns]
        else:
            out.append(sorted(turns, key=lambda e: (e.start_s, e.channel or 0)))
    return out


def encode(
    examples: list[Example], labels: list[str], config: AnnotatorConfig, bundle, batch: int = 8
) -> list[Encoded]:
    """``examples`` (their corpus transcripts) for the bundle's frozen speech and text encoders:
    run per batch as it is drawn (``train.features: stream``), or once here, ``batch`` at a
    time, their real frames and tokens held (``memory``)."""
    from annotator.kinds.mister_e.utterances import TextStates
    from annotator.models.hubert import HubertFeatures

    speech = HubertFeatures(common.model_path(bundle.base["speech_encoder"], config))
    text = TextStates(common.model_path(bundle.base["text_encoder"], config))
    source = UtteranceSource(speech, text, common.ClipReader(examples, config.s3, config.audio))
    out = [Encoded(None, None, labels.index(e.label), e, source) for e in examples]
    if config.train.features == "stream":
        return out
    for start in range(0, len(out), batch):
        chunk = out[start : start + batch]
        b = source.batch(chunk)
        for k, item in enumerate(chunk):
            item.frames = b["frames"][k][b["frame_mask"][k]].clone()
            item.tokens = b["tokens"][k][b["token_mask"][k]].clone()
            item.source = None
    return out


def collate_utterances(items: list[Encoded]) -> dict[str, torch.Tensor]:
    if items[0].frames is None:
        return items[0].source.batch(items)
    frames, frame_mask = common.pad_rows([i.frames for i in items])
    tokens, token_mask = common.pad_rows([i.tokens for i in items])
    labels = torch.tensor([i.label for i in items])
    return {
        "frames": frames,
        "frame_mask": frame_mask,
        "tokens": tokens,
        "token_mask": token_mask,
        "labels": labels,
    }


def _setup(cfg: dict[str, Any]):
    import ray.train

    from annotator.models.bundle import Bundle
    from training.data import examples_of

    config = AnnotatorConfig.model_validate(cfg["config"])
    torch.set_num_threads(max(1, int(config.train.cpus_per_worker)))
    torch.manual_seed(config.train.seed)
    bundle = Bundle.load(common.model_path(cfg["start"], config))
    examples = [e for e in examples_of(cfg["examples"], bundle.labels) if e.split == "train"]
    ctx = ray.train.get_context()
    return config, bundle, examples, ctx.get_world_rank(), ctx.get_world_size()


def _prepared(module: torch.nn.Module, lr: float, cfg: dict[str, Any]):
    """``module`` on this worker's device (DDP-wrapped in a group), its AdamW, the epoch to
    start from (a checkpoint's next) and the device."""
    import ray.train.torch

    model = ray.train.torch.prepare_model(module.train())
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    start = common.load_checkpoint(model, optimizer, cfg.get("resume_from"))
    return model, optimizer, start, ray.train.torch.get_device()


def stage1_loop(cfg: dict[str, Any]) -> None:

    from annotator.kinds.mister_e.utterances import UtteranceHeads

    config, bundle, examples, rank, world = _setup(cfg)
    train = config.train
    share = common.shard_indices(len(examples), rank, world, train.seed)
    items = encode([examples[i] for i in share], bundle.labels, config, bundle)
    model, optimizer, start, device = _prepared(
        UtteranceHeads.load(bundle.root), train.lr_stage1, cfg
    )
    per_worker = common.local_batch_size(train.batch_size, world)

    def batch_loss(batch):
        out = model(batch["frames"], batch["frame_mask"], batch["tokens"], batch["token_mask"])
        loss = losses.focal(out["speech_logits"], batch["labels"], train.gamma)
        return loss + losses.focal(out["text_logits"], batch["labels"], train.gamma)

    for epoch in range(start, train.epochs_stage1):
        loader = common.epoch_loader(
            items,
            collate_utterances,
            per_worker,
            train.seed + epoch,
            common.streamed_by_source(items),
        )
        tally = common.train_epoch(model, optimizer, loader, device, batch_loss)
        common.save_checkpoint(model, optimizer, epoch, tally.metrics(device))


@dataclass
class Conversation:
    speech: torch.Tensor  # (U, dim) utterance embeddings in time order
    text: torch.Tensor
    labels: torch.Tensor  # (U,)


@torch.no_grad()
def embed(items: list[Encoded], heads, batch: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """The stage-1 heads' (speech, text) embeddings of ``items``, (n, dim) each."""
    speech, text = [], []
    for start in range(0, len(items), batch):
        b = collate_utterances(items[start : start + batch])
        out = heads(b["frames"], b["frame_mask"], b["tokens"], b["token_mask"])
        speech.append(out["speech"])
        text.append(out["text"])
    return torch.cat(speech), torch.cat(text)


def collate_conversations(items: list[Conversation]) -> dict[str, torch.Tensor]:
    speech, mask = common.pad_rows([c.speech for c in items])
    text, _ = common.pad_rows([c.text for c in items])
    labels, _ = common.pad_rows([c.labels for c in items])
    return {"speech": speech, "text": text, "mask": mask, "labels": labels}


def heads_from(bundle, state: dict[str, torch.Tensor] | None):
    """The bundle's utterance heads, with ``state`` (stage 1's checkpoint tensors) if given."""
    from annotator.kinds.mister_e.utterances import UtteranceHeads

    heads = UtteranceHeads.load(bundle.root)
    if state is not None:
        heads.load_state_dict(state, strict=True)
    return heads.eval()


def stage2_loop(cfg: dict[str, Any]) -> None:
    from annotator.kinds.mister_e.model import MisterE

    config, bundle, examples, rank, world = _setup(cfg)
    train = config.train
    calls = conversations(examples)
    share = [calls[i] for i in common.shard_indices(len(calls), rank, world, train.seed)]
    heads = heads_from(bundle, cfg["heads"])
    flat = [e for call in share for e in call]
    speech, text = embed(encode(flat, bundle.labels, config, bundle), heads)
    items, at = [], 0
    for call in share:
        n = len(call)
        labels = torch.tensor([bundle.labels.index(e.label) for e in call])
        items.append(Conversation(speech[at : at + n], text[at : at + n], labels))
        at += n
    model, optimizer, start, device = _prepared(MisterE.load(bundle.root), train.lr_stage2, cfg)
    per_worker = common.local_batch_size(train.batch_size, world)

    def context_loss(batch):
        out = model(batch["speech"], batch["text"], batch["mask"])
        return mister_e_loss(out, batch["labels"], batch["mask"], gamma=train.gamma)

    for epoch in range(start, train.epochs_stage2):
        loader = common.epoch_loader(items, collate_conversations, per_worker, train.seed + epoch)
        tally = common.train_epoch(model, optimizer, loader, device, context_loss)
        common.save_checkpoint(model, optimizer, epoch, tally.metrics(device))


def train_mister_e(
    config: AnnotatorConfig,
    manifest: Path,
    start_bundle: Path,
    out: Path,
    name: str = "mister-e",
):
    """Train from ``start_bundle`` (an untrained one from ``annotator models init``, or a trained
    one to fine-tune) on ``manifest``'s train split, stage 1 then stage 2 (each a Ray Train run,
    ``<name>-stage1`` / ``-stage2``, resumable); export the result to ``out``."""
    from annotator.kinds.mister_e.model import MisterE, write_mister_e_bundle
    from annotator.models.bundle import Bundle
    from training.llm import ExportError

    config = config.for_kind("mister_e")  # its own schedule (train.schedules.mister_e)
    start = Bundle.load(common.model_path(str(start_bundle), config))
    if start.kind != "mister_e":
        raise ValueError(f"{start_bundle} is a {start.kind} bundle, not a MiSTER-E one")
    cfg = {
        "config": config.model_dump(mode="json"),
        "examples": common.training_rows(manifest, start.labels, config),
        "start": common.ship(str(start_bundle), config, name),
        "heads": None,
    }
    heads_checkpoint = None
    if config.train.epochs_stage1 > 0:
        heads_checkpoint = common.run_trainer(stage1_loop, cfg, f"{name}-stage1", config)
    # Stage 1's tensors travel to the workers with their config (the checkpoint directory is
    # on this machine, which other nodes may not see); the heads are small.
    heads_state = common.checkpoint_state(heads_checkpoint) if heads_checkpoint else None
    context_checkpoint = common.run_trainer(
        stage2_loop, {**cfg, "heads": heads_state}, f"{name}-stage2", config
    )
    model = MisterE.load(start.root)
    try:
        heads = heads_from(start, heads_state)
        model.load_state_dict(common.checkpoint_state(context_checkpoint), strict=True)
    except RuntimeError as exc:
        raise ExportError(f"checkpoints do not fit {start_bundle}: {exc}") from None
    progress = [
        json.loads((Path(c) / "progress.json").read_text()) if c else {}
        for c in (heads_checkpoint, context_checkpoint)
    ]
    extra = {
        "trained": True,
        "manifest": str(manifest),
        "epochs": [config.train.epochs_stage1, config.train.epochs_stage2],
        "loss": [p.get("loss") for p in progress],
        "started_from": start.version,
    }
    return write_mister_e_bundle(Path(out), heads, model.eval(), start.labels, start.base, extra)


def posteriors(config: AnnotatorConfig, bundle, examples: list[Example]) -> dict[str, np.ndarray]:
    """(len(examples), labels) posteriors of a MiSTER-E bundle, in the examples' order, two
    ways from one pass of the encoders: ``context``, the context model over each conversation
    (:func:`conversations`) in serving's windows; ``utterance_alone``, the stage-1 heads'
    classifiers on each utterance alone (speech and text averaged). Calibration is not
    applied."""
    from annotator.kinds.mister_e.model import MisterE
    from annotator.kinds.mister_e.windows import run_in_windows

    calls = conversations(examples)
    ordered = [e for call in calls for e in call]
    heads, model = heads_from(bundle, None), MisterE.load(bundle.root)
    items = encode(ordered, bundle.labels, config, bundle)
    window, overlap = config.models.context_window, config.models.context_overlap
    parts: dict[str, list[torch.Tensor]] = {"context": [], "utterance_alone": []}
    at = 0
    with torch.no_grad():
        for call in calls:
            b = collate_utterances(items[at : at + len(call)])
            at += len(call)
            out = heads(b["frames"], b["frame_mask"], b["tokens"], b["token_mask"])
            logits = run_in_windows(model, out["speech"], out["text"], window, overlap)
            parts["context"].append(logits["logits"].softmax(-1))
            parts["utterance_alone"].append(
                (out["speech_logits"].softmax(-1) + out["text_logits"].softmax(-1)) / 2
            )
    where = {id(e): k for k, e in enumerate(ordered)}
    order = [where[id(e)] for e in examples]
    return {
        name: torch.cat(p).numpy()[order] if p else np.zeros((0, len(bundle.labels)))
        for name, p in parts.items()
    }


def score(
    bundle_dir: Path,
    manifest: Path,
    config: AnnotatorConfig,
    split: str = "test",
) -> dict[str, Any]:
    """A MiSTER-E bundle on ``split``'s conversations with context and without
    (:func:`posteriors`): UA, WA and weighted F1 of both."""
    from annotator.models.bundle import Bundle
    from training.data import read_manifest
    from training.metrics import scores

    bundle = Bundle.load(bundle_dir)
    labels = bundle.labels
    examples = [e for e in read_manifest(Path(manifest), labels) if e.split == split]
    truth = [labels.index(e.label) for e in examples]
    got = {
        name: scores(truth, probs.argmax(-1).tolist(), len(labels))
        for name, probs in posteriors(config, bundle, examples).items()
    }
    return {
        "split": split,
        "utterances": len(examples),
        "conversations": len(conversations(examples)),
        **got,
    }


def retrain(config: AnnotatorConfig, manifest, start: str, out: Path, name: str):
    """``annotator review retrain``: :func:`train_mister_e` from the served bundle at ``start``."""
    return train_mister_e(config, manifest, start, Path(out), name=name)


def mister_e_loss(
    out: dict[str, torch.Tensor],
    labels: torch.Tensor,
    mask: torch.Tensor,
    gamma: float = 3.0,
    supcon_weight: float = 2.0,
    temperature: float = 1.0,
    kl_weight: float = 0.1,
) -> torch.Tensor:
    """MiSTER-E's stage-2 loss (annotator/kinds/mister_e/model.py) over the real utterances only
    (``mask``; ``labels`` (batch, U)): focal (γ 3) on the gated mixture and on each expert,
    + 2 × SupCon (τ 1) between the paired speech and text representations (an utterance's two
    views share its label), + 0.1 × the symmetric KL between every two experts' predictions."""
    real = mask.bool()
    y = labels[real]
    experts = out["experts"][real]  # (n, 3, labels)
    loss = focal(out["logits"][real], y, gamma)
    for k in range(experts.shape[1]):
        loss = loss + focal(experts[:, k], y, gamma)
    views = torch.cat(
        [
            F.normalize(out["speech_states"][real], dim=-1),
            F.normalize(out["text_states"][real], dim=-1),
        ]
    )
    loss = loss + supcon_weight * supervised_contrastive(views, torch.cat([y, y]), temperature)
    log_p = F.log_softmax(experts, dim=-1)
    kl, pairs = experts.new_zeros(()), 0
    for i in range(experts.shape[1]):
        for j in range(i + 1, experts.shape[1]):
            kl = kl + F.kl_div(log_p[:, i], log_p[:, j], log_target=True, reduction="batchmean")
            kl = kl + F.kl_div(log_p[:, j], log_p[:, i], log_target=True, reduction="batchmean")
            pairs += 1
    return loss + kl_weight * kl / max(pairs, 1)
