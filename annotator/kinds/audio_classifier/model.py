"""Any transformers ``AutoModelForAudioClassification`` checkpoint, served as an emotion model.

    16 kHz waveform ─► the checkpoint's feature extractor ─► its model ─► logits over its own
    labels (``config.id2label``) ─► softmax ─► the bundle's label mapping ─► our label set

The checkpoint's posterior is what transformers' ``pipeline("audio-classification")`` gives for
the same clip (the softmax over the head's logits); the mapping then takes it onto one of
:data:`annotator.schema.LABEL_SETS` (:class:`LabelMap`): each of our labels gets the summed
probability of the checkpoint labels mapped to it, checkpoint labels mapped to none are dropped,
and what is left is renormalised to sum to 1. A checkpoint trained on IEMOCAP's four classes
(``neu``, ``hap``, ``ang``, ``sad``, as SUPERB's emotion-recognition task names them) maps one to
one; a checkpoint with more classes (``fru``, ``sur``, …) loses them, and its four are renormalised.

The bundle holds the mapping (``audio_classifier.json``) and names the checkpoint
(``base["classifier"]``); an imported bundle holds no weights. ``annotator review retrain``
fine-tunes the checkpoint's head (optionally its top encoder layers, :class:`Tuning`) and stores
just those tensors, as safetensors, laid over the checkpoint when it loads
(:class:`AudioClassifier`): the checkpoint itself is never copied or changed.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from annotator.models.bundle import Bundle, BundleError, write_meta

KIND = "audio_classifier"
RECORD = "audio_classifier.json"  # the mapping and how the checkpoint is tuned
WEIGHTS = "audio_classifier.safetensors"  # tuned tensors over the checkpoint; absent if none
SAMPLE_RATE = 16_000

# The usual IEMOCAP abbreviations (SUPERB's emotion-recognition labels), recognised by the
# default mapping beside our labels' own names. ``exc`` (excited) is not among them: merging it
# into happy is a choice of the corpus's 4-class protocol, and is the user's to make with --labels.
IEMOCAP_ABBREVIATIONS = {"neu": "neutral", "ang": "angry", "sad": "sad", "hap": "happy"}


class LabelMapError(ValueError):
    """A label mapping that does not take a checkpoint's labels onto one of our label sets."""


def checkpoint_labels(config) -> tuple[str, ...]:
    """A transformers config's labels in class-index order (``id2label`` keys may be strings
    once read back from JSON)."""
    id2label = {int(k): str(v) for k, v in (config.id2label or {}).items()}
    if sorted(id2label) != list(range(config.num_labels)):
        raise LabelMapError(
            f"the checkpoint's id2label {config.id2label} does not name its {config.num_labels} "
            "classes 0…n-1"
        )
    return tuple(id2label[i] for i in range(config.num_labels))


def parse_labels(text: str) -> dict[str, str]:
    """``neu=neutral,ang=angry`` → {checkpoint label: our label}; ``→`` or ``:`` may stand for
    ``=``."""
    mapping: dict[str, str] = {}
    for pair in (p.strip() for p in text.split(",")):
        if not pair:
            continue
        for sep in ("=", "→", ":"):
            if sep in pair:
                source, _, target = (s.strip() for s in pair.partition(sep))
                break
        else:
            raise LabelMapError(f"{pair!r} is not CHECKPOINT_LABEL=OUR_LABEL")
        if not source or not target:
            raise LabelMapError(f"{pair!r} is not CHECKPOINT_LABEL=OUR_LABEL")
        if source in mapping and mapping[source] != target:
            raise LabelMapError(f"{source!r} is mapped twice ({mapping[source]}, {target})")
        mapping[source] = target
    if not mapping:
        raise LabelMapError(f"{text!r} maps no label")
    return mapping


@dataclass(frozen=True)
class LabelMap:
    """How a checkpoint's labels become one of our label sets.

    Attributes:
        checkpoint_labels: the checkpoint's labels, in its class-index order.
        mapping: checkpoint label → our label, for the checkpoint labels kept (several may map
            to one of ours: their probabilities add up); the others are dropped and the rest
            renormalised.
        label_set: the name of our label set (annotator.schema.LABEL_SETS); every one of its
            labels has at least one checkpoint label.
    """

    checkpoint_labels: tuple[str, ...]
    mapping: Mapping[str, str]
    label_set: str

    def __post_init__(self) -> None:
        from annotator.schema import label_set

        try:
            ours = label_set(self.label_set)
        except ValueError as exc:
            raise LabelMapError(str(exc)) from None
        unknown = [s for s in self.mapping if s not in self.checkpoint_labels]
        if unknown:
            raise LabelMapError(
                f"the checkpoint has no label {', '.join(map(repr, unknown))} (its labels: "
                f"{', '.join(self.checkpoint_labels)})"
            )
        foreign = sorted({t for t in self.mapping.values() if t not in ours})
        if foreign:
            raise LabelMapError(
                f"{', '.join(map(repr, foreign))} not in label set {self.label_set} "
                f"({', '.join(ours)})"
            )
        missing = [label for label in ours if label not in self.mapping.values()]
        if missing:
            raise LabelMapError(
                f"the mapping leaves {', '.join(missing)} of label set {self.label_set} with no "
                f"checkpoint label (the checkpoint's labels: {', '.join(self.checkpoint_labels)})"
            )

    @property
    def labels(self) -> tuple[str, ...]:
        from annotator.schema import label_set

        return label_set(self.label_set)

    @property
    def dropped(self) -> tuple[str, ...]:
        """Checkpoint labels mapped to none of ours."""
        return tuple(label for label in self.checkpoint_labels if label not in self.mapping)

    def matrix(self) -> np.ndarray:
        """(checkpoint labels, our labels) 0/1: which of ours each checkpoint label adds to."""
        out = np.zeros((len(self.checkpoint_labels), len(self.labels)))
        for i, source in enumerate(self.checkpoint_labels):
            if source in self.mapping:
                out[i, self.labels.index(self.mapping[source])] = 1.0
        return out

    def apply(self, probs: np.ndarray) -> np.ndarray:
        """(n, checkpoint labels) posteriors → (n, our labels): summed per our label, the
        dropped labels' mass taken away, renormalised."""
        mapped = np.asarray(probs, dtype=np.float64) @ self.matrix()
        return mapped / np.clip(mapped.sum(axis=1, keepdims=True), 1e-300, None)

    def describe(self) -> str:
        """``neu→neutral, ang→angry, …`` in the checkpoint's order, and what is dropped."""
        kept = ", ".join(f"{s}→{self.mapping[s]}" for s in self.checkpoint_labels if s in self)
        return kept + (f" (dropped: {', '.join(self.dropped)})" if self.dropped else "")

    def __contains__(self, source: str) -> bool:
        return source in self.mapping

    def to_json(self) -> dict[str, Any]:
        return {
            "checkpoint_labels": list(self.checkpoint_labels),
            "mapping": dict(self.mapping),
            "label_set": self.label_set,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> LabelMap:
        return cls(tuple(data["checkpoint_labels"]), dict(data["mapping"]), data["label_set"])


def default_mapping(names: Sequence[str], label_set_name: str | None = None) -> LabelMap:
    """The mapping when none is given: each checkpoint label matched (case and spaces aside) by
    our labels' own names and by the usual IEMOCAP abbreviations (:data:`IEMOCAP_ABBREVIATIONS`)
    onto ``label_set_name``, or else onto the label set whose labels all get a match (of several,
    the one that keeps the most checkpoint labels, then the first in LABEL_SETS)."""
    from annotator.schema import LABEL_SETS

    def matched(name: str) -> str:
        word = name.strip().lower()
        return IEMOCAP_ABBREVIATIONS.get(word, word)

    candidates = [label_set_name] if label_set_name else list(LABEL_SETS)
    fits = []
    for set_name in candidates:
        if set_name not in LABEL_SETS:
            raise LabelMapError(f"unknown label set {set_name!r}; known: {', '.join(LABEL_SETS)}")
        mapping = {n: matched(n) for n in names if matched(n) in LABEL_SETS[set_name]}
        if set(mapping.values()) == set(LABEL_SETS[set_name]):
            fits.append((len(mapping), -candidates.index(set_name), set_name, mapping))
    if not fits:
        where = f"label set {label_set_name}" if label_set_name else "any label set"
        raise LabelMapError(
            f"the checkpoint's labels ({', '.join(names)}) do not name every label of {where} "
            "by name or IEMOCAP abbreviation: give the mapping, e.g. --labels "
            "'neu=neutral,ang=angry,sad=sad,hap=happy'"
        )
    _, _, set_name, mapping = max(fits)
    return LabelMap(tuple(names), mapping, set_name)


def resolve_mapping(
    names: Sequence[str],
    mapping: Mapping[str, str] | str | None = None,
    label_set_name: str | None = None,
) -> LabelMap:
    """The :class:`LabelMap` of a checkpoint whose labels are ``names``: the given ``mapping``
    ({checkpoint label: our label}, or its ``neu=neutral,…`` text) onto ``label_set_name`` (by
    default the label set whose labels are exactly the mapping's targets), or without one
    :func:`default_mapping`. :class:`LabelMapError` names what does not fit."""
    from annotator.schema import LABEL_SETS

    if mapping is None:
        return default_mapping(names, label_set_name)
    if isinstance(mapping, str):
        mapping = parse_labels(mapping)
    if label_set_name is None:
        targets = set(mapping.values())
        exact = [n for n, labels in LABEL_SETS.items() if set(labels) == targets]
        covering = [n for n, labels in LABEL_SETS.items() if targets <= set(labels)]
        if not exact and not covering:
            known = "; ".join(f"{n}: {', '.join(ls)}" for n, ls in LABEL_SETS.items())
            raise LabelMapError(
                f"the mapping's labels ({', '.join(sorted(targets))}) are not those of one label "
                f"set ({known})"
            )
        # Exactly one set's labels: that one. Else the smallest set holding them all, whose
        # missing labels LabelMap then names.
        label_set_name = (exact or sorted(covering, key=lambda n: len(LABEL_SETS[n])))[0]
    return LabelMap(tuple(names), dict(mapping), label_set_name)


@dataclass(frozen=True)
class Tuning:
    """What ``review retrain`` (and ``annotator train audio-classifier``) fine-tunes.

    Attributes:
        top_layers: encoder layers below the head trained with it (0: the head alone, what the
            model's own parameters outside its base model are: for wav2vec2-family classifiers
            the projector, the classifier and the layer weights of a weighted layer sum). Each
            costs its activations' memory in training; the encoder below stays frozen.
        encoder_lr_scale: the top layers' learning rate as a share of the head's
            (``train.lr_stage2``): [guess] a pretrained encoder moves less than its head.
    """

    top_layers: int = 0
    encoder_lr_scale: float = 0.1

    def __post_init__(self) -> None:
        if self.top_layers < 0:
            raise ValueError(f"top_layers must be 0 or more, not {self.top_layers}")
        if self.encoder_lr_scale <= 0:
            raise ValueError(f"encoder_lr_scale must be positive, not {self.encoder_lr_scale}")


@dataclass(frozen=True)
class Record:
    """``audio_classifier.json``: the label mapping and how the checkpoint is tuned."""

    label_map: LabelMap
    tuning: Tuning = field(default_factory=Tuning)

    def to_json(self) -> dict[str, Any]:
        return {**self.label_map.to_json(), "tuning": asdict(self.tuning)}

    @classmethod
    def read(cls, root: Path) -> Record:
        try:
            data = json.loads((Path(root) / RECORD).read_text())
            return cls(LabelMap.from_json(data), Tuning(**data.get("tuning", {})))
        except (KeyError, TypeError, ValueError) as exc:
            raise BundleError(f"{Path(root) / RECORD} cannot be read: {exc}") from None


def encoder_layers(model) -> torch.nn.ModuleList:
    """The transformer layers of the checkpoint's encoder, bottom to top: ``encoder.layers``
    (wav2vec2, HuBERT, WavLM, …) or ``encoder.layer`` (BERT-style, AST) of its base model."""
    encoder = getattr(model.base_model, "encoder", None)
    for name in ("layers", "layer"):
        layers = getattr(encoder, name, None)
        if isinstance(layers, torch.nn.ModuleList):
            return layers
    raise ValueError(
        f"{type(model).__name__} has no encoder layers this kind knows how to fine-tune "
        "(base_model.encoder.layers): tune its head alone (top_layers 0)"
    )


def trainable_modules(model, tuning: Tuning) -> dict[str, torch.nn.Module | torch.nn.Parameter]:
    """Name → module (or bare parameter) that ``tuning`` trains: everything outside the base
    model (the head), and the top ``tuning.top_layers`` encoder layers."""
    base = model.base_model
    if base is model:
        raise ValueError(
            f"{type(model).__name__} keeps no separate base model: its head cannot be told from "
            "its encoder"
        )
    out: dict[str, Any] = {n: m for n, m in model.named_children() if m is not base}
    out.update(dict(model.named_parameters(recurse=False)))
    if tuning.top_layers:
        layers = encoder_layers(model)
        if tuning.top_layers > len(layers):
            raise ValueError(
                f"top_layers {tuning.top_layers}: the checkpoint's encoder has {len(layers)}"
            )
        names = {id(m): n for n, m in model.named_modules()}
        for layer in list(layers)[-tuning.top_layers :]:
            out[names[id(layer)]] = layer
    return out


def trainable_names(model, tuning: Tuning) -> list[str]:
    """The parameter names (as the checkpoint's state dict has them) ``tuning`` trains."""
    names = []
    for name, part in trainable_modules(model, tuning).items():
        if isinstance(part, torch.nn.Parameter):
            names.append(name)
        else:
            names += [f"{name}.{sub}" for sub, _ in part.named_parameters()]
    return names


def overlay(model, weights: Mapping[str, torch.Tensor], where: str) -> None:
    """Lay tuned tensors over the checkpoint's own; one the checkpoint lacks, or of another
    shape, is refused (the bundle was tuned from another checkpoint)."""
    own = model.state_dict()
    wrong = [k for k, v in weights.items() if k not in own or own[k].shape != v.shape]
    if wrong:
        raise BundleError(
            f"{where} was tuned over another checkpoint: {', '.join(wrong[:3])} do not fit it"
        )
    model.load_state_dict(dict(weights), strict=False)


def tuned_weights(root: Path) -> dict[str, torch.Tensor]:
    """The bundle's tuned tensors (empty for an imported bundle)."""
    from safetensors.torch import load_file

    path = Path(root) / WEIGHTS
    return load_file(path) if path.is_file() else {}


def model_inputs(extractor, waveforms: Sequence[np.ndarray], device, dtype) -> dict:
    """The feature extractor's input for 16 kHz waveforms, its float tensors in ``dtype`` on
    ``device``: one clip exactly as ``pipeline("audio-classification")`` asks for it (the
    extractor's own padding: Whisper's pads to 30 s), several padded to the longest with their
    attention mask (only for an extractor that gives one: :func:`can_batch`)."""
    clips = [np.asarray(w, dtype=np.float32) for w in waveforms]
    if len(clips) == 1:
        inputs = extractor(clips[0], sampling_rate=SAMPLE_RATE, return_tensors="pt")
    else:
        inputs = extractor(
            clips,
            sampling_rate=SAMPLE_RATE,
            padding=True,
            return_attention_mask=True,
            return_tensors="pt",
        )
    return {
        k: v.to(device, dtype) if v.is_floating_point() else v.to(device) for k, v in inputs.items()
    }


def min_samples(config) -> int:
    """The shortest clip a wav2vec2-family checkpoint's convolutional feature encoder makes one
    frame of (its receptive field: 400 samples, 25 ms, for HuBERT's and wav2vec 2.0's); 0 for a
    checkpoint without one."""
    kernels, strides = getattr(config, "conv_kernel", None), getattr(config, "conv_stride", None)
    if not kernels or not strides:
        return 0
    field, jump = 1, 1
    for kernel, stride in zip(kernels, strides, strict=True):
        field, jump = field + (kernel - 1) * jump, jump * stride
    return field


def long_enough(waveforms: Sequence[np.ndarray], samples: int) -> list[np.ndarray]:
    """Each waveform, followed by silence up to ``samples`` when shorter: a clip under one frame
    would make the encoder fail (or pool over no frame); the pipeline scores no such clip
    either, so nothing else changes."""
    return [np.pad(w, (0, samples - len(w))) if len(w) < samples else w for w in waveforms]


def can_batch(extractor) -> bool:
    """Whether clips of different lengths can share a padded batch and each get what it gets
    alone: only when the extractor gives an attention mask (wav2vec2-family checkpoints with
    group norm in their feature encoder, wav2vec2-base's, normalise over the padding too and
    their extractors say so by giving none), so that the model masks the padding out."""
    return bool(getattr(extractor, "return_attention_mask", False))


class AudioClassifier:
    """A bundle's checkpoint, ready to score: the transformers model in eval mode with the
    bundle's tuned tensors laid over it, its feature extractor and the label mapping.

    Args:
        checkpoint: the local directory (or hub name) of the checkpoint.
        record: the bundle's mapping; the checkpoint's ``id2label`` must be the one it maps.
        weights: tuned tensors to lay over the checkpoint's (none: the checkpoint as published).
        where: what to name in errors (the bundle).
    """

    def __init__(
        self,
        checkpoint: str,
        record: Record,
        weights: Mapping[str, torch.Tensor] | None = None,
        device: str = "cpu",
        dtype: torch.dtype = torch.float32,
        where: str = "bundle",
    ) -> None:
        from transformers import AutoFeatureExtractor, AutoModelForAudioClassification

        self.model = AutoModelForAudioClassification.from_pretrained(
            checkpoint, use_safetensors=True, dtype=dtype
        )
        own = checkpoint_labels(self.model.config)
        if own != record.label_map.checkpoint_labels:
            raise BundleError(
                f"{where} maps the labels {list(record.label_map.checkpoint_labels)}, but the "
                f"checkpoint {checkpoint} has {list(own)}: another checkpoint than it was "
                "written for"
            )
        if weights:
            overlay(self.model, weights, where)
        self.model.eval().to(device)
        self.model.requires_grad_(False)
        self.extractor = AutoFeatureExtractor.from_pretrained(checkpoint)
        rate = getattr(self.extractor, "sampling_rate", SAMPLE_RATE)
        if rate != SAMPLE_RATE:
            raise BundleError(
                f"the checkpoint {checkpoint} takes {rate} Hz audio; annotate serves 16 kHz"
            )
        self.record, self.device, self.dtype = record, device, dtype
        self.min_samples = min_samples(self.model.config)

    @classmethod
    def for_bundle(
        cls,
        bundle: Bundle,
        checkpoint: str,
        device: str = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> AudioClassifier:
        """The classifier a bundle serves, its checkpoint opened at ``checkpoint`` (the local
        directory ``base["classifier"]`` names on this node)."""
        record = Record.read(bundle.root)
        if list(record.label_map.labels) != list(bundle.labels):
            raise BundleError(
                f"bundle {bundle.root} has labels {bundle.labels} but maps onto "
                f"{list(record.label_map.labels)}"
            )
        weights = tuned_weights(bundle.root)
        return cls(checkpoint, record, weights, device, dtype, where=f"bundle {bundle.root}")

    @torch.inference_mode()
    def checkpoint_posteriors(self, waveforms: Sequence[np.ndarray], batch: int = 16) -> np.ndarray:
        """(n, checkpoint labels) float64: the softmax over the head's logits, as
        ``pipeline("audio-classification")`` gives it, ``batch`` clips at a time (one at a time
        where padding would change them, :func:`can_batch`)."""
        step = batch if can_batch(self.extractor) else 1
        waveforms = long_enough(waveforms, self.min_samples)
        out = []
        for start in range(0, len(waveforms), step):
            inputs = model_inputs(
                self.extractor, waveforms[start : start + step], self.device, self.dtype
            )
            logits = self.model(**inputs).logits.float()
            out.append(torch.softmax(logits, dim=-1).double().cpu().numpy())
        if not out:
            return np.zeros((0, len(self.record.label_map.checkpoint_labels)))
        return np.concatenate(out)

    def posteriors(self, waveforms: Sequence[np.ndarray], batch: int = 16) -> np.ndarray:
        """(n, our labels) float64 posteriors (uncalibrated): the checkpoint's, mapped
        (:meth:`LabelMap.apply`). What serving (``AudioClassifierStage``) and evaluation both
        compute."""
        return self.record.label_map.apply(self.checkpoint_posteriors(waveforms, batch))


def write_audio_classifier_bundle(
    root: Path,
    classifier: str,
    label_map: LabelMap,
    tuning: Tuning = Tuning(),
    weights: Mapping[str, torch.Tensor] | None = None,
    extra: dict[str, Any] | None = None,
) -> Bundle:
    """An audio-classifier bundle at ``root`` (new, or an empty directory): the mapping and
    tuning (``audio_classifier.json``), the tuned tensors if any (``audio_classifier.safetensors``,
    over the checkpoint named ``classifier``: ``small:audio-classifier``, a path, an ``s3://``
    URI or a hub name) and ``bundle.json``."""
    from safetensors.torch import save_file

    root = Path(root)
    if root.exists() and any(root.iterdir()):
        raise BundleError(f"{root} is not empty: write a bundle into a new directory")
    if not classifier:
        raise BundleError("an audio-classifier bundle names its checkpoint: base['classifier']")
    root.mkdir(parents=True, exist_ok=True)
    record = Record(label_map, tuning)
    (root / RECORD).write_text(json.dumps(record.to_json(), indent=2, sort_keys=True))
    if weights:
        state = {k: v.detach().cpu().contiguous() for k, v in sorted(weights.items())}
        save_file(state, root / WEIGHTS)
    meta = {
        "kind": KIND,
        "labels": list(label_map.labels),
        "base": {"classifier": classifier},
        "extra": extra or {},
    }
    return write_meta(root, meta)
