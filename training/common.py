"""What both training stages share: features, batches, checkpoints and the Ray Train launch.

Checkpoints hold weights as safetensors and the optimizer state as a tensors-only torch file
(loaded with ``weights_only=True``): nothing in them can run code when read back.
"""

from __future__ import annotations

import functools
import json
import shutil
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from annotator.config import AnnotatorConfig, ConfigError
from training.data import Example, load_audios


def model_path(name: str, config: AnnotatorConfig) -> str:
    """The local directory this process's node loads ``name`` from (annotator/models/locate.py:
    fetched into the node's cache when it is in object storage)."""
    from annotator.models.locate import local_model

    return local_model(name, config)


class ClipReader:
    """A worker's clips, read with bounded memory: when a clip of a source is first asked for,
    every clip this reader knows of that source is read in one streamed pass (``load_audios``)
    and held until a clip of another source is asked for. Batches that run source by source
    (``epoch_loader(group_by=...)``) read each source once per epoch. A source may be a tar/zip
    archive: it is read once for all its members' clips, each member decoded once, within the
    ``audio`` config's safety and size bounds (annotator/audio/clips.py)."""

    def __init__(self, examples: Sequence[Example], s3=None, audio=None) -> None:
        self.s3, self.settings = s3, audio
        self.of_source: dict[str, list[Example]] = {}
        for ex in examples:
            self.of_source.setdefault(ex.audio_uri, []).append(ex)
        self.held: dict[int, Any] = {}
        self.decodes = 0  # streamed passes over a source

    def audio(self, example: Example):
        if id(example) not in self.held:
            examples = self.of_source[example.audio_uri]
            self.held = dict(
                zip(map(id, examples), load_audios(examples, self.s3, self.settings), strict=True)
            )
            self.decodes += 1
        return self.held[id(example)]


class FrameSource:
    """The frozen encoder's frames of a batch of items, computed when the batch is drawn
    (``train.features: stream``): the items' audio from the worker's :class:`ClipReader`, the
    input ``train.inputs`` takes away taken away (``heard``), padded frames zero."""

    def __init__(self, encoder, reader: ClipReader, inputs: str) -> None:
        self.encoder, self.reader, self.inputs = encoder, reader, inputs

    def padded(self, items: Sequence[Item]) -> tuple[torch.Tensor, torch.Tensor]:
        from annotator.models.bundle import heard

        audios = [self.reader.audio(item.example) for item in items]
        audios, _ = heard(self.inputs, audios, ["" for _ in items])
        frames, mask = self.encoder(audios)
        # Computed in the dtype serving computes them in, trained on in float32 (what the
        # trained modules are); clones leave inference mode: the frames feed a training forward.
        mask = mask.cpu()
        return (frames.float().cpu() * mask[..., None]).clone(), mask.clone()


@dataclass(eq=False)
class Item:
    """One training example as a worker holds it: its transcript, label and speaker, and its
    frozen encoder's frames, either held (``frames``) or computed per batch (``source``)."""

    frames: torch.Tensor | None  # (frames, audio_dim) when held (train.features: memory)
    text: str
    label: int
    speaker: str = ""  # named in the stage-2 prompt when known, as serving does
    example: Example | None = None
    source: FrameSource | None = None  # train.features: stream


def encoder_device(config: AnnotatorConfig):
    """(device, dtype) a kind's frozen encoders run on, in training as in serving: this process's
    GPU if it has one (a GPU training worker's, or the evaluation actor's), in the features
    stages' dtype (``models.features_dtype``: float16 on a GPU by default)."""
    from annotator.models.hubert import features_dtype

    device = "cuda" if torch.cuda.is_available() else "cpu"
    return device, features_dtype(config.models.features_dtype, device)


def transcripts_heard(
    examples: Sequence[Example], transcripts: str
) -> tuple[list[Example], list[str]]:
    """(examples, texts) as ``train.transcripts`` trains on them: ``reference`` the manifest's
    text; ``asr`` what the served ASR made of each clip (``Example.asr_transcript``, set by
    :func:`training_rows`); ``both`` a training example once with each (once where they agree),
    and any other split (scored, as served) with the ASR's."""
    if transcripts == "reference":
        return list(examples), [ex.transcript for ex in examples]
    missing = [ex.recording for ex in examples if ex.asr_transcript is None]
    if missing:
        raise ConfigError(
            f"train.transcripts {transcripts} needs each clip's ASR transcript, and {missing[0]} "
            "has none: read the manifest through training_rows (training/asr_transcripts.py)"
        )
    out, texts = [], []
    for ex in examples:
        heard = [ex.asr_transcript]
        if transcripts == "both" and ex.split == "train" and ex.transcript != ex.asr_transcript:
            heard.insert(0, ex.transcript)
        out += [ex] * len(heard)
        texts += heard
    return out, texts


def featurize(
    examples: Sequence[Example],
    labels: Sequence[str],
    config: AnnotatorConfig,
    encoder: str | None = None,
    texts: Sequence[str] | None = None,
) -> list[Item]:
    """Each example as an :class:`Item` for the frozen HuBERT (or ``encoder``, another
    wav2vec2-family model by name, its last layer, as some kinds' bundles name); ``texts`` each
    example's words (default: :func:`transcripts_heard`'s, which may repeat an example); only the
    inputs ``train.inputs`` keeps. With ``train.features: stream``
    the frames are computed per batch (:func:`pad_frames`); with ``memory`` once, here. The
    encoder runs as serving runs it (:func:`encoder_device`); frames are float32 CPU tensors."""
    from annotator.models.bundle import heard
    from annotator.models.hubert import HubertFeatures

    # As the features stage runs it: a GPU worker's frames in float16 by default, not float32.
    device, dtype = encoder_device(config)
    if encoder is None:
        hubert = HubertFeatures(
            model_path(config.models.hubert, config),
            config.models.hubert_layer,
            device=device,
            dtype=dtype,
        )
    else:
        hubert = HubertFeatures(model_path(encoder, config), device=device, dtype=dtype)
    reader = ClipReader(examples, config.s3, config.audio)
    if texts is None:
        examples, texts = transcripts_heard(examples, config.train.transcripts)
    # An ablation trained on one input (train.inputs) never sees the other; serving does the
    # same from the bundle's record.
    _, texts = heard(config.train.inputs, [np.zeros(0)] * len(texts), texts)
    items = [
        Item(None, text, labels.index(ex.label), ex.speaker, example=ex)
        for ex, text in zip(examples, texts, strict=True)
    ]
    source = FrameSource(hubert, reader, config.train.inputs)
    if config.train.features == "stream":
        for item in items:
            item.source = source
        return items
    for start in range(0, len(items), 8):
        chunk = items[start : start + 8]
        frames, mask = source.padded(chunk)
        for k, item in enumerate(chunk):
            item.frames = frames[k][mask[k]].clone()
    return items


def source_of(item: Any) -> str:
    """The source a kind's training item (it holds its ``example``) is cut from:
    ``epoch_loader``'s ``group_by``, so a :class:`ClipReader` reads each source once per epoch."""
    return item.example.audio_uri


def streamed_by_source(items: Sequence[Any]):
    """``epoch_loader``'s ``group_by`` for items whose frames are computed per batch
    (``frames`` None): :func:`source_of`; None (the plain shuffle) for held frames."""
    return source_of if items and items[0].frames is None else None


def pad_rows(rows: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Tensors of different lengths (first axis) → one zero-padded (batch, longest, …) tensor
    and its (batch, longest) mask of real rows."""
    longest = max(r.shape[0] for r in rows)
    out = rows[0].new_zeros(len(rows), longest, *rows[0].shape[1:])
    mask = torch.zeros(len(rows), longest, dtype=torch.bool)
    for k, r in enumerate(rows):
        out[k, : r.shape[0]], mask[k, : r.shape[0]] = r, True
    return out, mask


def pad_frames(items: Sequence[Item]) -> tuple[torch.Tensor, torch.Tensor]:
    """The batch's frames, zero-padded, and their mask: computed now (``train.features:
    stream``) or from the held frames."""
    if items[0].frames is None:
        return items[0].source.padded(items)
    return pad_rows([i.frames for i in items])


def frame_statistics(
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]], device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per feature, the mean and 1/std of a frozen encoder's real frames over the training split,
    summed over every rank's share (each rank gets the same values, so replicas stay equal).

    ``batches``: this rank's share as (features (batch, *lead, frames, dim), mask (batch, frames))
    pairs; the result is (*lead, dim) each. A kind standardises its frames by these before its
    first step (a random or pretrained encoder's frames share a large common component that
    drowns the rest: README, "Which input does the model learn from?")."""
    import torch.distributed as dist

    total = squares = None
    frames = 0.0
    for features, mask in batches:
        real = mask.reshape(mask.shape[0], *[1] * (features.dim() - 3), mask.shape[1], 1)
        values = features.double() * real
        sums, sq = values.sum(dim=(0, -2)), (values**2).sum(dim=(0, -2))
        total = sums if total is None else total + sums
        squares = sq if squares is None else squares + sq
        frames += float(mask.sum())
    if total is None:
        raise ValueError("no frames to take statistics of")
    total, squares = total.to(device), squares.to(device)
    frames_t = torch.tensor([frames], dtype=torch.float64, device=device)
    if dist.is_available() and dist.is_initialized():
        for tensor in (total, squares, frames_t):
            dist.all_reduce(tensor)
    mean = total / frames_t
    std = (squares / frames_t - mean**2).clamp_min(0).sqrt()
    return mean.float(), (1 / std.clamp_min(1e-5)).float()


# -- data parallelism --------------------------------------------------------------------------
#
# Each worker featurises only its own share of the training split (HuBERT runs once per example
# across the group, not once per worker), so the share is fixed for the whole run and chosen the
# way torch's DistributedSampler chooses it: one seeded shuffle, padded by repeating examples to a
# multiple of the worker count, every world_size-th index. Every share then has the same length,
# and each epoch's loader drops its last incomplete batch: every rank takes the same number of
# steps (DDP's all-reduce pairs them up step by step) and every step holds exactly the global
# batch. Dropping rather than padding the last batch keeps duplicates out of a batch (a repeated
# example would be its own SupCon positive); the reshuffle each epoch drops different examples.


def local_batch_size(global_batch: int, world_size: int) -> int:
    """Examples per worker per step: ``train.batch_size`` is the global batch (the paper's 8)."""
    if global_batch % world_size:
        raise ConfigError(
            f"train.batch_size {global_batch} is the global batch and must divide evenly over "
            f"train.num_workers {world_size} workers"
        )
    return global_batch // world_size


def shard_indices(n: int, rank: int, world_size: int, seed: int) -> list[int]:
    """This rank's fixed share of ``n`` examples; every rank's share has the same length."""
    from torch.utils.data import DistributedSampler

    sampler = DistributedSampler(
        range(n), num_replicas=world_size, rank=rank, shuffle=True, seed=seed, drop_last=False
    )
    return list(sampler)


# glibc's M_MMAP_THRESHOLD (malloc.h) and the threshold a training worker sets it to.
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 64 * 1024


def bounded_heap() -> bool:
    """Make glibc hand every allocation of 64 KiB or more (a batch's tensors, a clip's audio)
    back to the system when it is freed; returns whether it could (glibc only).

    By default glibc raises its mmap threshold each time such a block is freed, so later ones
    come from the heap, which keeps them when they are freed: a Qieemo worker that holds one
    batch at a time peaked at 1,347 MiB on a manifest 10x as long and 875 MiB on the 1x one
    (benchmarks/train_memory.py). A fixed threshold takes that growth out. Called first thing on
    every training worker (:func:`run_trainer`)."""
    import ctypes
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (musl, say): its allocator does not do this
        return False
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))


def _on_worker(loop: Callable[[dict], None], loop_config: dict) -> None:
    """A training worker's loop, after :func:`bounded_heap`."""
    bounded_heap()
    loop(loop_config)


def peak_rss_mib() -> float:
    """This process's peak resident memory so far, MiB: VmHWM, which exec resets (ru_maxrss
    would count the pages of the process that forked this one until its exec)."""
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def epoch_loader(
    items: Sequence[Any],
    collate: Callable[[list[Any]], Any],
    batch_size: int,
    seed: int,
    group_by: Callable[[Any], Any] | None = None,
) -> DataLoader:
    """One epoch over this worker's share: reshuffled by ``seed``, full batches only.

    ``group_by`` (an item's source, say): the groups are shuffled and each group's items run
    together, shuffled among themselves, so a loader that reads each group's data when it first
    meets it (a long recording's clips: :class:`ClipReader`) reads it once per epoch.
    When no group holds more than one item (a corpus of one clip per file), the plain shuffle."""
    if len(items) < batch_size:
        raise ConfigError(
            f"a worker's share of the training split holds {len(items)} examples, fewer than "
            f"its batch of {batch_size}: lower train.batch_size or train.num_workers"
        )
    generator = torch.Generator().manual_seed(seed)
    groups: dict[Any, list[int]] = {}
    for k, item in enumerate(items if group_by is not None else ()):
        groups.setdefault(group_by(item), []).append(k)
    if len(groups) == len(items) or group_by is None:
        return DataLoader(
            items,
            batch_size=batch_size,
            shuffle=True,
            drop_last=True,
            collate_fn=collate,
            generator=generator,
        )
    members = list(groups.values())
    order = []
    for g in torch.randperm(len(members), generator=generator).tolist():
        inside = members[g]
        order += [inside[i] for i in torch.randperm(len(inside), generator=generator).tolist()]
    return DataLoader(
        items, batch_size=batch_size, sampler=order, drop_last=True, collate_fn=collate
    )


def train_epoch(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    loader: DataLoader,
    device: torch.device,
    batch_loss: Callable[[dict[str, Any]], torch.Tensor],
    also_on_device: Sequence[Any] = (),
    size_key: str = "labels",
) -> EpochTally:
    """One epoch of optimizer steps: every batch of ``loader`` moved to ``device`` (and checked
    there, with ``also_on_device``: class weights, say), ``batch_loss(batch)`` back-propagated.
    Returns the epoch's tally (``EpochTally.metrics`` sums it over the group); a batch's size is
    the length of its ``size_key`` tensor."""
    model.train()
    tally = EpochTally()
    for batch in loader:
        batch = to_device(batch, device)
        check_device([batch, *also_on_device], device)
        loss = batch_loss(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        tally.add(loss.detach(), len(batch[size_key]))
    return tally


def to_device(batch: Any, device: torch.device) -> Any:
    """``batch`` with every tensor in it (nested in dicts, lists and tuples) on ``device``."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device)
    if isinstance(batch, Mapping):
        return {key: to_device(value, device) for key, value in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(value, device) for value in batch)
    return batch


def check_device(batch: Any, device: torch.device) -> None:
    """Raise if a tensor in ``batch`` is not on ``device`` (the model's inputs, before a step)."""
    found = {str(t.device) for t in _tensors(batch) if not _on(t, device)}
    if found:
        raise RuntimeError(f"training inputs on {sorted(found)}, not on the worker's {device}")


def _on(tensor: torch.Tensor, device: torch.device) -> bool:
    device = torch.device(device)
    return tensor.device.type == device.type and (
        device.index is None or tensor.device.index == device.index
    )


def _tensors(batch: Any):
    if isinstance(batch, torch.Tensor):
        yield batch
    elif isinstance(batch, Mapping):
        for value in batch.values():
            yield from _tensors(value)
    elif isinstance(batch, (list, tuple)):
        for value in batch:
            yield from _tensors(value)


class EpochTally:
    """What one worker did in an epoch, summed over the group at its end: the mean loss, each
    rank's step count and the smallest and largest global batch (all checked by the tests)."""

    def __init__(self) -> None:
        self.loss, self.steps, self.sizes = 0.0, 0, []

    def add(self, loss: torch.Tensor, batch_size: int) -> None:
        self.loss, self.steps = self.loss + float(loss), self.steps + 1
        self.sizes.append(batch_size)

    def metrics(self, device: torch.device) -> dict[str, Any]:
        import torch.distributed as dist

        mine = torch.tensor(
            [self.loss, self.steps, min(self.sizes, default=0), max(self.sizes, default=0)],
            dtype=torch.float64,
            device=device,
        )
        rows = [mine]
        if dist.is_available() and dist.is_initialized():
            rows = [torch.empty_like(mine) for _ in range(dist.get_world_size())]
            dist.all_gather(rows, mine)
        table = torch.stack(rows).cpu()
        steps = [int(s) for s in table[:, 1]]
        return {
            "loss": float(table[:, 0].sum()) / max(sum(steps), 1),
            "steps_per_rank": steps,
            "global_batch_min": int(table[:, 2].sum()),
            "global_batch_max": int(table[:, 3].sum()),
        }


# -- checkpoints -------------------------------------------------------------------------------


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    return {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items() if k in names}


def save_checkpoint(model, optimizer, epoch: int, metrics: dict[str, float]) -> None:
    """Report this epoch to Ray Train; rank 0 attaches the checkpoint."""
    import ray.train
    from safetensors.torch import save_file

    module = getattr(model, "module", model)  # DDP wraps the model
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = None
        if ray.train.get_context().get_world_rank() == 0:
            save_file(trainable_state(module), f"{tmp}/state.safetensors")
            torch.save(optimizer.state_dict(), f"{tmp}/optimizer.pt")
            Path(tmp, "progress.json").write_text(json.dumps({"epoch": epoch, **metrics}))
            checkpoint = ray.train.Checkpoint.from_directory(tmp)
        ray.train.report({"epoch": epoch, **metrics}, checkpoint=checkpoint)


def load_checkpoint(model, optimizer, resume_from: str | None) -> int:
    """Restore the latest checkpoint (Ray Train's, or ``resume_from``); returns the next epoch."""
    import ray.train
    from safetensors.torch import load_file

    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None and resume_from:
        checkpoint = ray.train.Checkpoint(resume_from)
    if checkpoint is None:
        return 0
    with checkpoint.as_directory() as directory:
        module = getattr(model, "module", model)
        missing = module.load_state_dict(
            load_file(f"{directory}/state.safetensors"), strict=False
        ).unexpected_keys
        if missing:
            raise RuntimeError(f"checkpoint does not fit the model: {missing[:3]}")
        optimizer.load_state_dict(torch.load(f"{directory}/optimizer.pt", weights_only=True))
        return json.loads(Path(directory, "progress.json").read_text())["epoch"] + 1


def latest_checkpoint(storage: str, name: str) -> str | None:
    """The newest ``checkpoint_*`` directory of run ``name`` under a local ``storage``."""
    run = Path(storage) / name
    if not run.is_dir():
        return None
    found = sorted(run.glob("checkpoint_*"), key=lambda p: p.stat().st_mtime)
    found = [p for p in found if (p / "progress.json").is_file()]
    return str(found[-1]) if found else None


def checkpoint_state(checkpoint_dir: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(f"{checkpoint_dir}/state.safetensors")


def training_rows(
    manifest: Path | str, labels: Sequence[str] | None, config: AnnotatorConfig
) -> list[dict[str, Any]]:
    """The manifest (a local file or ``s3://``), read here and sent to the workers with the
    loop's config (``loop_config["examples"]``); refused before any worker starts when it has
    no ``train`` example of these labels."""
    from training.data import ManifestError, manifest_rows, read_manifest

    examples = read_manifest(manifest, labels, config.s3)
    if not any(e.split == "train" for e in examples):
        raise ManifestError(f"{manifest} has no train split to train on")
    if config.train.transcripts != "reference":
        from training.asr_transcripts import with_asr_transcripts

        examples = with_asr_transcripts(examples, str(manifest), config)
    return manifest_rows(examples)


def ship(location: str | Path | None, config: AnnotatorConfig, name: str) -> str | None:
    """A location of a model, bundle or stage-1 directory that every training worker can open,
    whatever node it is on: an ``s3://`` URI or a name the workers resolve themselves
    (``small:…`` with ``models.store``, a hub name) stays as it is; a registry name becomes its
    version's URI; a local directory is uploaded to ``train.storage`` when that is object
    storage (``<storage>/<name>/inputs/<digest>/``, once per content), else given as its
    absolute path (one machine, where every process sees it)."""
    from annotator.models.locate import locate
    from annotator.storage import (
        is_remote,
        join,
        read_manifest,
        tree_digest,
        tree_files,
        upload_tree,
    )

    if location is None:
        return None
    where = locate(str(location), config.models, config.s3)
    if is_remote(where) or not Path(where).is_dir():
        return where
    storage = config.train.storage
    if not storage or not is_remote(storage):
        return str(Path(where).resolve())
    digest = tree_digest(tree_files(Path(where)))
    uri = join(storage, name, "inputs", digest[:16])
    if read_manifest(uri, config.s3) is None:
        upload_tree(Path(where), uri, config.s3)
    return uri


def run_trainer(
    loop: Callable[[dict], None],
    loop_config: dict[str, Any],
    name: str,
    config: AnnotatorConfig,
    best_by: str | None = None,
) -> str:
    """Run ``loop`` on a Ray Train worker group; returns the local path of the final checkpoint,
    or with ``best_by`` (a metric every epoch reports, higher is better) of the best one: Ray
    Train keeps the ``keep_checkpoints`` best by it.

    A run stopped part-way resumes from its newest checkpoint when started again with the same
    ``storage`` and ``name``."""
    from ray.train import CheckpointConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from annotator.pipeline.connection import connect

    train = config.train
    storage = train.storage or str(Path(config.models.home) / "train")
    if not storage.startswith("s3://"):
        storage = str(Path(storage).resolve())
    connect(config)
    require_shared_storage(storage)
    resume = latest_checkpoint(storage, name) if not storage.startswith("s3://") else None
    trainer = TorchTrainer(
        functools.partial(_on_worker, loop),
        train_loop_config={**loop_config, "resume_from": resume},
        scaling_config=ScalingConfig(
            num_workers=train.num_workers,
            use_gpu=train.use_gpu,
            resources_per_worker={"CPU": train.cpus_per_worker},
        ),
        run_config=RunConfig(
            name=name,
            storage_path=storage.removeprefix("s3://"),
            checkpoint_config=CheckpointConfig(
                num_to_keep=train.keep_checkpoints,
                checkpoint_score_attribute=best_by,
                checkpoint_score_order="max",
            ),
            **_storage_fs(storage, config),
        ),
    )
    result = trainer.fit()
    if result.checkpoint is None:
        raise RuntimeError(f"training run {name} produced no checkpoint: {result.error}")
    chosen = result.checkpoint
    if best_by is not None and result.best_checkpoints:
        chosen = max(result.best_checkpoints, key=lambda pair: pair[1][best_by])[0]
    if not storage.startswith("s3://"):
        return chosen.path  # already on this machine: no copy
    # From S3, into one fixed place per run name (replaced each time), never a fresh temp
    # directory: a checkpoint is hundreds of MB and temp copies would pile up run after run.
    local = Path(config.models.home) / "train-downloads" / name
    shutil.rmtree(local, ignore_errors=True)
    return chosen.to_directory(str(local))


def require_shared_storage(storage: str, what: str = "train.storage") -> None:
    """Refuse, before any worker starts, a local ``train.storage`` on a cluster of several
    nodes: their disks are their own, so checkpoints and the workers' inputs must go through
    object storage."""
    import ray

    from annotator.storage import is_remote

    nodes = [n for n in ray.nodes() if n.get("Alive")]
    if len(nodes) > 1 and not is_remote(storage):
        raise ConfigError(
            f"{what} {storage} is a local path, and this Ray cluster has {len(nodes)} "
            "nodes that share no disk: set train.storage to an s3:// URI (checkpoints, stage-1 "
            "weights and start bundles travel through it)"
        )


def _storage_fs(storage: str, config: AnnotatorConfig) -> dict[str, Any]:
    if not storage.startswith("s3://"):
        return {}
    import pyarrow.fs

    from annotator.storage import filesystem

    fs, _ = filesystem(storage, config.s3)
    return {"storage_filesystem": pyarrow.fs.PyFileSystem(pyarrow.fs.FSSpecHandler(fs))}


def worker_setup(
    cfg: dict[str, Any],
) -> tuple[AnnotatorConfig, list[str], list[Example], list[Item]]:
    """Start of a worker's loop: config, threads, seeds, the training split, this worker's
    featurised share of it (see ``shard_indices``)."""
    from transformers import set_seed

    from annotator.schema import label_set

    config = AnnotatorConfig.model_validate(cfg["config"])
    train = config.train
    torch.set_num_threads(max(1, int(train.cpus_per_worker)))
    set_seed(train.seed)
    labels = list(label_set(train.label_set))
    examples, items = worker_share(cfg, config, labels, "train")
    return config, labels, examples, items


def worker_share(
    cfg: dict[str, Any], config: AnnotatorConfig, labels: list[str], split: str
) -> tuple[list[Example], list[Item]]:
    """The manifest's ``split`` examples and this worker's featurised share of them: for
    ``train`` the padded, equal shares of ``shard_indices``; for any other split (scored, not
    trained on) every ``world_size``-th example, so each is scored exactly once."""
    import ray.train

    from training.data import examples_of

    examples = [e for e in examples_of(cfg["examples"], labels) if e.split == split]
    if not examples:
        return [], []
    # Each transcript a clip is trained on is an item of its own, shared out like the rest (so
    # ``both`` keeps every rank's share, and its step count, equal).
    examples, texts = transcripts_heard(examples, config.train.transcripts)
    ctx = ray.train.get_context()
    seed = config.train.seed
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    if split == "train":
        share = shard_indices(len(examples), rank, world, seed)
    else:
        share = list(range(rank, len(examples), world))
    mine = [examples[i] for i in share]
    return examples, featurize(mine, labels, config, cfg.get("encoder"), [texts[i] for i in share])
