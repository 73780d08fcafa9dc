"""The bundle: everything the annotator serves, in one directory, with a content hash as version.

Layout::

    bundle.json               kind, label set, emotion-token ids, base-model names, version
    emoq_former.json/.safetensors
    projector.json/.safetensors
    text-tokenizer/           the EmoQ-Former's tokenizer (BERT family)
    lora/                     PEFT LoRA adapter (adapter_config.json, adapter_model.safetensors)

The version is a hash of every file's bytes plus ``bundle.json`` without its version field; it is
written on every output row, so a row always says which weights labelled it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from annotator.models.kinds import DEFAULT_KIND, UnknownKind
from annotator.models.kinds import kind as kind_of

BUNDLE_FORMAT = 1
META = "bundle.json"
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")


class BundleError(RuntimeError):
    """A bundle that is missing a part, or whose parts do not agree."""


def content_version(root: Path, meta: dict[str, Any]) -> str:
    digest = hashlib.sha256()
    unversioned = {k: v for k, v in meta.items() if k != "version"}
    digest.update(json.dumps(unversioned, sort_keys=True).encode())
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.name != META):
        digest.update(path.relative_to(root).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


INPUTS = ("both", "audio", "text")


def heard(inputs: str, waveforms: Sequence[np.ndarray], texts: Sequence[str]):
    """(waveforms, texts) as a model trained on ``inputs`` hears them: ``audio`` blanks every
    transcript, ``text`` makes every waveform silence of its length, ``both`` changes nothing.
    Training and serving both take the inputs through here."""
    if inputs not in INPUTS:
        raise ValueError(f"inputs must be one of {INPUTS}, not {inputs!r}")
    if inputs == "audio":
        texts = ["" for _ in texts]
    elif inputs == "text":
        waveforms = [np.zeros_like(w) for w in waveforms]
    return list(waveforms), list(texts)


@dataclass
class Bundle:
    """A loaded bundle's description; the weights load on demand (actors load what they need).

    Attributes:
        root: the bundle directory.
        labels: emotion words, in the order of every probability vector.
        emotion_token_ids: first LLM token of each label after ``Emotion:``.
        base: base-model names (hubert, text_encoder, llm), as in the config.
        version: content hash.
    """

    root: Path | None  # None: described from object storage (Bundle.describe)
    labels: list[str]
    emotion_token_ids: list[int]
    base: dict[str, str]
    version: str
    lora_rank: int
    extra: dict[str, Any] = field(default_factory=dict)
    kind: str = DEFAULT_KIND  # annotator/models/kinds.py: which model, which stages serve it
    soft_tokens: int = 1  # prompt rows the audio takes (EmoQ one, EmoSLLM its queries)

    @property
    def inputs(self) -> str:
        """What the bundle was trained to hear: ``both`` (the paper's model), or ``audio`` /
        ``text`` alone (Table 4's ablations); serving takes the other away the same way."""
        return str(self.extra.get("inputs", "both"))

    @property
    def temperature(self) -> float:
        """The posterior's calibration temperature (annotator/models/calibration.py); 1 when
        the bundle was never calibrated."""
        return float(self.extra.get("calibration", {}).get("temperature", 1.0))

    @property
    def unsure_below(self) -> float:
        """The abstention threshold chosen when the bundle was calibrated for a coverage; 0
        (never abstain) otherwise."""
        return float(self.extra.get("calibration", {}).get("unsure_below", 0.0))

    @property
    def lora_dir(self) -> Path:
        return self.root / "lora"

    @property
    def text_tokenizer_dir(self) -> Path | None:
        """The EmoQ-Former's tokenizer, which cuts transcripts; None for a kind without one."""
        path = self.root / "text-tokenizer"
        return path if path.is_dir() else None

    @property
    def audio_first(self) -> bool:
        """Whether the prompt puts the audio before the transcript (EmoSLLM) or after (EmoQ)."""
        return self.kind == "emosllm"

    def load_emoq_former(self):
        from annotator.models.emoq_former import EmoQFormer

        return EmoQFormer.load(self.root)

    def load_projector(self):
        from annotator.models.projector import Projector

        return Projector.load(self.root)

    @classmethod
    def load(cls, root: str | Path, verify: bool = True) -> Bundle:
        """The bundle in the local directory ``root``, its parts checked (and with ``verify``
        its content hashed against its version)."""
        root = Path(root)
        if not (root / META).is_file():
            raise BundleError(f"{root} is not a bundle: {META} is missing")
        meta = _checked_meta(str(root), json.loads((root / META).read_text()))
        required = kind_of(meta.get("kind", DEFAULT_KIND)).required
        missing = [name for name in required if not (root / name).is_file()]
        if missing:
            raise BundleError(f"bundle {root} is missing: {', '.join(missing)}")
        if verify and content_version(root, meta) != meta["version"]:
            raise BundleError(
                f"bundle {root} was modified after it was written (version hash mismatch)"
            )
        return cls._from_meta(root, meta)

    @classmethod
    def describe(cls, location: str, s3=None, verify: bool = True) -> Bundle:
        """The bundle at ``location`` (a local directory, or an ``s3://`` URI: its
        ``bundle.json`` alone is read, no weights) — what a run's driver needs. A bundle
        described from object storage has no local ``root``; the nodes that serve it fetch it
        (annotator/models/cache.py), where its content hash is checked."""
        from annotator.storage import StorageError, is_remote, join, read_text

        if not is_remote(location):
            return cls.load(location, verify=verify)
        try:
            meta = json.loads(read_text(join(location, META), s3))
        except StorageError:
            raise BundleError(f"{location} is not a bundle: {META} is missing") from None
        return cls._from_meta(None, _checked_meta(location, meta))

    @classmethod
    def _from_meta(cls, root: Path | None, meta: dict[str, Any]) -> Bundle:
        return cls(
            root=root,
            labels=list(meta["labels"]),
            # A kind without an LLM (qieemo) has no emotion tokens and no LoRA.
            emotion_token_ids=list(meta.get("emotion_token_ids", [])),
            base=dict(meta["base"]),
            version=meta["version"],
            lora_rank=int(meta.get("lora_rank", 0)),
            extra=dict(meta.get("extra", {})),
            kind=meta.get("kind", DEFAULT_KIND),
            soft_tokens=int(meta.get("soft_tokens", 1)),
        )

    def check_llm_tokenizer(self, tokenizer) -> None:
        """The served LLM must give the labels the token ids the bundle was built with."""
        from annotator.models.prompt import emotion_token_ids

        actual = emotion_token_ids(tokenizer, self.labels)
        if actual != self.emotion_token_ids:
            raise BundleError(
                f"bundle {self.root} was built for other emotion-token ids ({self.emotion_token_ids}) "
                f"than this LLM's tokenizer gives ({actual}): wrong base LLM?"
            )


def _checked_meta(where: str, meta: dict[str, Any]) -> dict[str, Any]:
    """``bundle.json`` of the bundle at ``where``, refused if of another format or an unknown
    kind."""
    if meta.get("format") != BUNDLE_FORMAT:
        raise BundleError(
            f"bundle {where} has format {meta.get('format')!r}; this annotator reads {BUNDLE_FORMAT}"
        )
    try:
        kind_of(meta.get("kind", DEFAULT_KIND))
    except UnknownKind as exc:
        raise BundleError(f"{where}: {exc}") from None
    return meta


def save_lora(peft_model, directory: Path, base_name: str) -> None:
    """Save a PEFT adapter so vLLM can load it, naming the base by its config name, not a path."""
    peft_model.save_pretrained(directory, safe_serialization=True)
    _tidy_adapter_config(directory, base_name)


def save_lora_tensors(tensors: dict[str, Any], directory: Path, config, base_name: str) -> None:
    """Write a LoRA adapter in PEFT's on-disk format from its tensors alone, without the base
    model: what ``save_lora`` writes for a PEFT model holding these weights.

    Args:
        tensors: PEFT's saved key names (``base_model.model.<module>.lora_A.weight``, no adapter
            name), contiguous tensors.
        config: the ``LoraConfig`` the adapter was trained with (see ``lora_config``).
        base_name: the base LLM's config name, written as ``base_model_name_or_path``.
    """
    import copy

    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    # As PeftModel.save_pretrained: the safetensors carry {"format": "pt"}, the config is saved
    # for inference.
    save_file(tensors, directory / "adapter_model.safetensors", metadata={"format": "pt"})
    config = copy.deepcopy(config)
    config.inference_mode = True
    config.save_pretrained(str(directory))
    _tidy_adapter_config(directory, base_name)


def _tidy_adapter_config(directory: Path, base_name: str) -> None:
    config_path = directory / "adapter_config.json"
    config = json.loads(config_path.read_text())
    config["base_model_name_or_path"] = base_name
    # PEFT writes target_modules from a set (order varies by hash seed) and a README with paths:
    # both would make the same weights hash differently.
    if isinstance(config.get("target_modules"), list):
        config["target_modules"] = sorted(config["target_modules"])
    (directory / "README.md").unlink(missing_ok=True)
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True))


def write_bundle(
    root: Path,
    emoq_former,
    projector,
    text_tokenizer,
    lora_model,
    labels: Sequence[str],
    llm_tokenizer,
    base: dict[str, str],
    lora_rank: int,
    extra: dict[str, Any] | None = None,
) -> Bundle:
    """Write all parts, then ``bundle.json`` with the content hash last (its presence = complete)."""
    root.mkdir(parents=True, exist_ok=True)
    save_lora(lora_model, root / "lora", base["llm"])
    return _write_rest(
        root, emoq_former, projector, text_tokenizer, labels, llm_tokenizer, base, lora_rank, extra
    )


def write_bundle_from_tensors(
    root: Path,
    emoq_former,
    projector,
    text_tokenizer,
    lora_tensors: dict[str, Any],
    lora_dropout: float,
    labels: Sequence[str],
    llm_tokenizer,
    base: dict[str, str],
    lora_rank: int,
    extra: dict[str, Any] | None = None,
) -> Bundle:
    """``write_bundle`` with the LoRA given as PEFT-named tensors (``save_lora_tensors``), so no
    base LLM needs to be in memory: the same files as ``write_bundle`` for the same weights."""
    root.mkdir(parents=True, exist_ok=True)
    save_lora_tensors(
        lora_tensors, root / "lora", lora_config(lora_rank, dropout=lora_dropout), base["llm"]
    )
    return _write_rest(
        root, emoq_former, projector, text_tokenizer, labels, llm_tokenizer, base, lora_rank, extra
    )


def _write_meta(root: Path, meta: dict[str, Any]) -> Bundle:
    """Write ``bundle.json`` with the content hash of every other file as version: last, so a
    bundle with its ``bundle.json`` is complete."""
    meta = {"format": BUNDLE_FORMAT, **meta}
    meta["version"] = content_version(root, meta)
    (root / META).write_text(json.dumps(meta, indent=2, sort_keys=True))
    return Bundle.load(root)


def _write_rest(
    root: Path,
    emoq_former,
    projector,
    text_tokenizer,
    labels: Sequence[str],
    llm_tokenizer,
    base: dict[str, str],
    lora_rank: int,
    extra: dict[str, Any] | None,
) -> Bundle:
    """Everything but the adapter, then ``bundle.json`` with the content hash last."""
    from annotator.models.prompt import emotion_token_ids

    emoq_former.save(root)
    projector.save(root)
    text_tokenizer.save_pretrained(root / "text-tokenizer")
    meta = {
        "kind": "emoq",
        "labels": list(labels),
        "emotion_token_ids": emotion_token_ids(llm_tokenizer, labels),
        "base": dict(base),
        "lora_rank": lora_rank,
        "extra": extra or {},
    }
    return _write_meta(root, meta)


def write_qieemo_bundle(
    root: Path,
    model,
    labels: Sequence[str],
    base: dict[str, str],
    extra: dict[str, Any] | None = None,
) -> Bundle:
    """A Qieemo bundle (annotator/models/qieemo.py): its fusion/attention/classifier weights and
    ``bundle.json`` naming the CTC encoder it runs over (``base["ctc_encoder"]``)."""
    if "ctc_encoder" not in base:
        raise BundleError("a Qieemo bundle names its CTC encoder: base['ctc_encoder']")
    root.mkdir(parents=True, exist_ok=True)
    model.save(root)
    meta = {
        "kind": "qieemo",
        "labels": list(labels),
        "base": dict(base),
        "extra": extra or {},
    }
    return _write_meta(root, meta)


def write_mister_e_bundle(
    root: Path,
    heads,
    context,
    labels: Sequence[str],
    base: dict[str, str],
    extra: dict[str, Any] | None = None,
) -> Bundle:
    """A MiSTER-E bundle (annotator/models/mister_e.py, mister_e_utterances.py): the utterance
    heads, the context model and ``bundle.json`` naming the two encoders the heads pool
    (``base["speech_encoder"]``, ``base["text_encoder"]``)."""
    missing = {"speech_encoder", "text_encoder"} - set(base)
    if missing:
        raise BundleError(f"a MiSTER-E bundle names its encoders: base{sorted(missing)}")
    root.mkdir(parents=True, exist_ok=True)
    heads.save(root)
    context.save(root)
    meta = {"kind": "mister_e", "labels": list(labels), "base": dict(base), "extra": extra or {}}
    return _write_meta(root, meta)


def write_emosllm_bundle(
    root: Path,
    mapper,
    lora,
    labels: Sequence[str],
    llm_tokenizer,
    base: dict[str, str],
    lora_rank: int,
    extra: dict[str, Any] | None = None,
    lora_dropout: float = 0.1,
) -> Bundle:
    """An EmoSLLM bundle (annotator/models/emosllm.py): the query-pooling mapper, the LoRA (a
    PEFT model, or PEFT-named tensors as ``save_lora_tensors`` takes them) and ``bundle.json``
    naming the audio encoder (``base["audio_encoder"]``) and the LLM (``base["llm"]``)."""
    from annotator.models.prompt import emotion_token_ids

    if not {"audio_encoder", "llm"} <= base.keys():
        raise BundleError(
            "an EmoSLLM bundle names its base models: base['audio_encoder'], base['llm']"
        )
    root.mkdir(parents=True, exist_ok=True)
    if isinstance(lora, dict):
        save_lora_tensors(
            lora, root / "lora", lora_config(lora_rank, dropout=lora_dropout), base["llm"]
        )
    else:
        save_lora(lora, root / "lora", base["llm"])
    mapper.save(root)
    meta = {
        "kind": "emosllm",
        "labels": list(labels),
        "emotion_token_ids": emotion_token_ids(llm_tokenizer, labels),
        "soft_tokens": mapper.config.num_queries,
        "base": dict(base),
        "lora_rank": lora_rank,
        "extra": extra or {},
    }
    return _write_meta(root, meta)


def with_calibration(bundle: Bundle, out: Path, calibration: dict[str, Any]) -> Bundle:
    """A copy of ``bundle`` at ``out`` whose record carries ``calibration`` (its ``temperature``
    and how it was fitted): the same weights, a new version. Written beside ``out`` and renamed
    into place, so ``out`` is whole or absent."""
    import shutil

    out = Path(out)
    if out.exists():
        raise BundleError(f"{out} exists; choose a new directory for the calibrated bundle")
    if float(calibration.get("temperature", 0)) <= 0:
        raise BundleError(f"calibration needs a positive temperature: {calibration}")
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    shutil.copytree(bundle.root, partial)
    meta = json.loads((partial / META).read_text())
    meta["extra"] = {**meta.get("extra", {}), "calibration": dict(calibration)}
    meta["version"] = content_version(partial, meta)
    (partial / META).write_text(json.dumps(meta, indent=2, sort_keys=True))
    partial.rename(out)
    return Bundle.load(out)


def lora_config(rank: int, dropout: float = 0.1, init: bool | str = True):
    """The LoRA the paper trains: attention projections, dropout 0.1, no ``modules_to_save``
    (vLLM cannot serve adapters that carry full modules)."""
    from peft import LoraConfig

    return LoraConfig(
        r=rank,
        lora_alpha=2 * rank,
        lora_dropout=dropout,
        target_modules=list(LORA_TARGETS),
        init_lora_weights=init,
        task_type="CAUSAL_LM",
    )
