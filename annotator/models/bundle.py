"""The bundle: everything the annotator serves, in one directory, with a content hash as version.

Every bundle holds ``bundle.json`` (kind, label set, base-model names, version and, for a kind
that serves an LLM, its emotion-token ids and a ``lora/`` PEFT adapter); the kind says which other
files it must hold (``Kind.required``, annotator/kinds/) and writes them.

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

from annotator.kinds import DEFAULT_KIND, UnknownKind
from annotator.kinds import kind as kind_of

BUNDLE_FORMAT = 1
META = "bundle.json"


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
    kind: str = DEFAULT_KIND  # annotator/kinds/__init__.py: which model, which stages serve it
    soft_tokens: int = 1  # prompt rows the audio takes in an LLM kind's prompt

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
        """The tokenizer that cuts transcripts for the bundle's own text encoder; None for a kind
        without one."""
        path = self.root / "text-tokenizer"
        return path if path.is_dir() else None

    @property
    def audio_first(self) -> bool:
        """Whether the prompt puts the audio before the transcript (the kind says:
        ``Kind.audio_first``) or after it."""
        return kind_of(self.kind).audio_first

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
            # A kind without an LLM has no emotion tokens and no LoRA.
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


def write_meta(root: Path, meta: dict[str, Any]) -> Bundle:
    """Write ``bundle.json`` with the content hash of every other file as version: last, so a
    bundle with its ``bundle.json`` is complete."""
    meta = {"format": BUNDLE_FORMAT, **meta}
    meta["version"] = content_version(root, meta)
    (root / META).write_text(json.dumps(meta, indent=2, sort_keys=True))
    return Bundle.load(root)


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
