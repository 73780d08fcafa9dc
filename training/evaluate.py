"""Evaluate a bundle the way it is served: HuBERT + EmoQ-Former + projector, then vLLM with the
bundle's LoRA. WA, UA, WF1, the confusion matrix (JSON + PNG) and every posterior."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from annotator.config import AnnotatorConfig
from training import common
from training.data import Example, load_audio
from training.metrics import confusion, confusion_png, scores


def posteriors(
    config: AnnotatorConfig, bundle_dir: Path, examples: Sequence[Example], labeler=None
) -> tuple[np.ndarray, list[str]]:
    """(n, labels) posteriors of ``examples`` and the transcripts used. ``labeler``: a running
    VLLMLabeler serving this bundle (else one is started and stopped here)."""
    from annotator.models.bundle import Bundle
    from annotator.models.embedder import EmotionEmbedder
    from annotator.models.labeler.vllm import VLLMLabeler
    from annotator.models.prompt import PromptEmbedder

    bundle = Bundle.load(bundle_dir)
    llm = common.model_path(config.models.llm, config)
    audios = [load_audio(ex, config.s3) for ex in examples]
    texts = [ex.transcript for ex in examples]
    if config.train.transcripts == "asr":
        from annotator.models.asr import Transcriber

        asr = Transcriber(common.model_path(config.models.asr.model, config), config.models.asr)
        texts = [t.text for t in asr(audios)]
    embedder = EmotionEmbedder(
        bundle, common.model_path(config.models.hubert, config), config.models.hubert_layer
    )
    prompts = PromptEmbedder.from_llm(llm, bundle.labels)
    embeds = []
    for start in range(0, len(audios), 16):
        _, soft = embedder(audios[start : start + 16], texts[start : start + 16])
        for k, vector in enumerate(soft):
            embeds.append(prompts.build(texts[start + k], vector.to(prompts.table.dtype)))
    own = labeler is None
    if own:
        labeler = VLLMLabeler(llm, bundle.emotion_token_ids, bundle.lora_dir, bundle.lora_rank)
    try:
        probs = labeler.posteriors(embeds)
    finally:
        if own:
            labeler.close()
    return probs, texts


def evaluate(
    config: AnnotatorConfig,
    bundle_dir: Path,
    examples: Sequence[Example],
    out: Path | None = None,
    labeler=None,
) -> dict[str, Any]:
    from annotator.models.bundle import Bundle

    bundle = Bundle.load(bundle_dir)  # hashes every file: once
    labels = bundle.labels
    probs, texts = posteriors(config, bundle_dir, examples, labeler)
    y_true = [labels.index(ex.label) for ex in examples]
    y_pred = probs.argmax(axis=1).tolist()
    result = {
        "bundle": str(bundle_dir),
        "bundle_version": bundle.version,
        "examples": len(examples),
        "labels": labels,
        **scores(y_true, y_pred, len(labels)),
        "confusion": confusion(y_true, y_pred, len(labels)).tolist(),
        "transcripts": config.train.transcripts,
        "posteriors": probs.tolist(),
        "texts": texts,
    }
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "eval.json").write_text(json.dumps(result, indent=2))
        confusion_png(
            np.asarray(result["confusion"]),
            labels,
            out / "confusion.png",
            f"UA {result['ua']:.3f}  WA {result['wa']:.3f}  WF1 {result['wf1']:.3f}",
        )
    return result
