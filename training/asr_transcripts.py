"""Transcripts as served: a manifest's clips transcribed by the ASR model and options ``annotate``
uses (``models.asr``), cached beside the manifest, so a bundle can be trained on the words it will
be served (``train.transcripts: asr | both``) rather than only on the corpus's reference text.

The cache is a JSON Lines file next to the manifest (``<manifest>.asr-<key>.jsonl``, on the same
filesystem: a local path or ``s3://``), ``key`` a digest of the ASR options that change the words
(model, compute type, beam, language, token cap): another ASR setting gets its own file, the same
setting reuses it run after run. Its first line records the options; each other line one clip
(``clip``: where its audio is and which part, ``text``). Clips the cache lacks are transcribed in
one Ray task that reserves the ASR stage's resources (``stages.asr``), so on a cluster Whisper runs
on a node that has it, never on the driver.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from annotator.config import AnnotatorConfig
from training.data import Example, examples_of, manifest_rows

# What changes the words; batch size, device and threads change only the speed.
WORD_OPTIONS = ("model", "compute_type", "beam_size", "language", "max_new_tokens")


def asr_options(config: AnnotatorConfig) -> dict[str, Any]:
    asr = config.models.asr.model_dump()
    return {name: asr[name] for name in WORD_OPTIONS}


def cache_uri(manifest: str, config: AnnotatorConfig) -> str:
    """The cache of ``manifest``'s ASR transcripts under ``config``'s ASR options."""
    options = json.dumps(asr_options(config), sort_keys=True)
    key = hashlib.sha256(options.encode()).hexdigest()[:12]
    return f"{manifest}.asr-{key}.jsonl"


def clip_key(example: Example) -> str:
    """One clip's identity: its source, archive member, span and channel."""
    return json.dumps(
        [example.audio_uri, example.member, example.start_s, example.end_s, example.channel]
    )


def read_cache(uri: str, config: AnnotatorConfig) -> dict[str, str]:
    from annotator.storage import exists, read_text

    if not exists(uri, config.s3):
        return {}
    lines = [json.loads(line) for line in read_text(uri, config.s3).splitlines() if line.strip()]
    if not lines or lines[0].get("asr") != asr_options(config):
        return {}  # another setting's file under a colliding name: not ours to trust
    return {line["clip"]: line["text"] for line in lines[1:]}


def write_cache(uri: str, texts: dict[str, str], config: AnnotatorConfig) -> None:
    from annotator.storage import write_text

    lines = [json.dumps({"asr": asr_options(config)})]
    lines += [json.dumps({"clip": clip, "text": text}) for clip, text in sorted(texts.items())]
    write_text(uri, "\n".join(lines) + "\n", config.s3)


def with_asr_transcripts(
    examples: Sequence[Example], manifest: str, config: AnnotatorConfig
) -> list[Example]:
    """``examples`` each with ``asr_transcript`` set: from the manifest itself where it carries
    them, else from the cache beside it, else transcribed now (one Ray task) and cached."""
    uri = cache_uri(str(manifest), config)
    cached = read_cache(uri, config)
    missing = [e for e in examples if e.asr_transcript is None and clip_key(e) not in cached]
    if missing:
        texts = transcribe_on_ray(missing, config)
        cached.update({clip_key(e): t for e, t in zip(missing, texts, strict=True)})
        write_cache(uri, cached, config)
    return [
        e if e.asr_transcript is not None else replace(e, asr_transcript=cached[clip_key(e)])
        for e in examples
    ]


def transcribe_on_ray(examples: Sequence[Example], config: AnnotatorConfig) -> list[str]:
    """Each clip heard alone by the configured ASR, in a Ray task with the ASR stage's
    resources (the examples travel as rows, never as a path of this machine's disk)."""
    import ray

    from annotator.pipeline.connection import connect

    connect(config)
    stage = config.stages.asr
    options: dict[str, Any] = {"num_cpus": stage.num_cpus, "num_gpus": stage.num_gpus}
    if stage.memory_gb:
        options["memory"] = int(stage.memory_gb * 1024**3)
    task = ray.remote(_transcribe).options(**options)
    return ray.get(task.remote(manifest_rows(examples), config.model_dump(mode="json")))


def _transcribe(rows: list[dict], config_data: dict) -> list[str]:
    from annotator.models.asr import Transcriber
    from training.common import model_path
    from training.data import load_audios

    config = AnnotatorConfig.model_validate(config_data)
    examples = examples_of(rows)
    asr = Transcriber(model_path(config.models.asr.model, config), config.models.asr)
    texts: list[str] = []
    for start in range(0, len(examples), 8):
        chunk = examples[start : start + 8]
        texts += [t.text for t in asr(load_audios(chunk, config.s3, config.audio))]
    return texts
