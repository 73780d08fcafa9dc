"""Evaluate a bundle the way it is served, whatever its kind: the kind scores the manifest
(annotator/kinds/plugin.py, ``scoring``); a kind that ends in the LLM does it through
:func:`llm_posteriors`. The posterior is scaled by the bundle's calibration temperature. WA, UA, WF1, the confusion matrix (JSON + PNG), ECE, NLL and the reliability bins
(JSON + PNG), every posterior."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from annotator.config import AnnotatorConfig
from annotator.kinds import DEFAULT_KIND
from annotator.models.calibration import ece, nll, reliability, reliability_png, scaled
from training import common
from training.data import Example, load_audios
from training.metrics import confusion, confusion_png, scores

ABLATIONS = ("audio", "text")  # what evaluation can take away from a trained model's inputs


def posteriors(
    config: AnnotatorConfig,
    bundle_dir: Path,
    examples: Sequence[Example],
    labeler=None,
    ablate: str | None = None,
) -> tuple[np.ndarray, list[str]]:
    """(n, labels) posteriors of ``examples`` as served (the bundle's calibration temperature
    applied) and the transcripts used, scored by the bundle's kind (its ``scoring`` module,
    annotator/kinds/plugin.py). ``labeler``: a running VLLMLabeler serving this bundle, for a kind
    that ends in the LLM (else one is started and stopped here). ``ablate``: take one input path
    away from the trained model: ``audio`` (every waveform replaced by silence of its length) or
    ``text`` (every transcript blank); a kind that does not hear one refuses it."""
    from annotator.kinds import kind
    from annotator.models.bundle import Bundle

    if ablate not in (None, *ABLATIONS):
        raise ValueError(f"ablate must be one of {ABLATIONS}, not {ablate!r}")
    bundle = Bundle.load(bundle_dir)
    scoring = kind(bundle.kind).part("scoring")
    return scoring.posteriors(config, bundle, examples, labeler=labeler, ablate=ablate)


def heard_inputs(
    config: AnnotatorConfig, examples: Sequence[Example], ablate: str | None
) -> tuple[list[np.ndarray], list[str]]:
    """The examples' audio and the transcripts a kind that hears both is served (ASR's when
    ``train.transcripts`` is ``asr`` or ``both``), with ``ablate``'s input taken away."""
    audios = load_audios(examples, config.s3, config.audio)
    texts = [ex.transcript for ex in examples]
    if config.train.transcripts != "reference":
        from annotator.models.asr import Transcriber

        asr = Transcriber(common.model_path(config.models.asr.model, config), config.models.asr)
        texts = [t.text for t in asr(audios)]
    if ablate == "audio":
        audios = [np.zeros_like(a) for a in audios]
    elif ablate == "text":
        texts = ["" for _ in texts]
    return audios, texts


def llm_posteriors(
    config: AnnotatorConfig,
    bundle,
    examples: Sequence[Example],
    soft_tokens,
    labeler=None,
    ablate: str | None = None,
) -> tuple[np.ndarray, list[str]]:
    """``posteriors`` of a kind that ends in the LLM: ``soft_tokens(waveforms, texts)`` gives a
    batch's soft tokens (the kind's own encoders), the prompt is built around them as the label
    stage builds it, and vLLM with the bundle's LoRA gives the posterior."""
    from annotator.models.labeler.vllm import VLLMLabeler
    from annotator.models.prompt import PromptEmbedder

    llm = common.model_path(config.models.llm, config)
    audios, texts = heard_inputs(config, examples, ablate)
    prompts = PromptEmbedder.for_bundle(llm, bundle)
    embeds = []
    for start in range(0, len(audios), 16):
        soft = soft_tokens(audios[start : start + 16], texts[start : start + 16])
        for k, vector in enumerate(soft):
            speaker = examples[start + k].speaker or None
            embeds.append(
                prompts.build(texts[start + k], vector.to(prompts.table.dtype), speaker=speaker)
            )
    own = labeler is None
    if own:
        labeler = VLLMLabeler(llm, bundle.emotion_token_ids, bundle.lora_dir, bundle.lora_rank)
    try:
        probs = labeler.posteriors(embeds)
    finally:
        if own:
            labeler.close()
    return scaled(probs, bundle.temperature), texts


def evaluate(
    config: AnnotatorConfig,
    bundle_dir: Path,
    examples: Sequence[Example],
    out: Path | None = None,
    labeler=None,
    ablate: str | None = None,
) -> dict[str, Any]:
    from annotator.models.bundle import Bundle

    bundle = Bundle.load(bundle_dir)  # hashes every file: once
    labels = bundle.labels
    probs, texts = posteriors(config, bundle_dir, examples, labeler, ablate)
    y_true = [labels.index(ex.label) for ex in examples]
    y_pred = probs.argmax(axis=1).tolist()
    result = {
        "bundle": str(bundle_dir),
        "bundle_version": bundle.version,
        "examples": len(examples),
        "labels": labels,
        **scores(y_true, y_pred, len(labels)),
        "confusion": confusion(y_true, y_pred, len(labels)).tolist(),
        # How far confidence is from accuracy (the bundle's temperature applied, 1 if none).
        "temperature": bundle.temperature,
        "ece": ece(probs, y_true),
        "nll": nll(probs, y_true),
        "reliability": reliability(probs, y_true),
        "transcripts": config.train.transcripts,
        "ablated": ablate,
        "posteriors": probs.tolist(),
        "texts": texts,
    }
    if out is not None:
        write_evaluation(result, out)
    return result


def write_evaluation(result: dict[str, Any], out: Path) -> None:
    """``eval.json``, ``confusion.png`` and ``reliability.png`` of an ``evaluate`` result."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "eval.json").write_text(json.dumps(result, indent=2))
    confusion_png(
        np.asarray(result["confusion"]),
        result["labels"],
        out / "confusion.png",
        f"UA {result['ua']:.3f}  WA {result['wa']:.3f}  WF1 {result['wf1']:.3f}",
    )
    if "reliability" in result:
        reliability_png(
            {f"T {result['temperature']:.2f}": result["reliability"]},
            out / "reliability.png",
            f"ECE {result['ece']:.3f} over {result['examples']} examples",
        )


# -- on the cluster ----------------------------------------------------------------------------


def evaluation_resources(
    config: AnnotatorConfig, bundle_kind: str = DEFAULT_KIND
) -> dict[str, Any]:
    """What the evaluation actor asks Ray for: the CPUs and memory of the bundle kind's stages
    (it does their work: the kind's encoders and, for an LLM kind, vLLM; ASR's too with ``asr``
    transcripts), and their GPU share, or a whole GPU where ``train.use_gpu`` says so."""
    from annotator.kinds import kind

    stages = [getattr(config.stages, name) for name in kind(bundle_kind).stages]
    if config.train.transcripts != "reference":
        stages.append(config.stages.asr)
    gpus = min(1.0, sum(s.num_gpus for s in stages))
    if config.train.use_gpu:
        gpus = 1.0
    resources: dict[str, Any] = {"num_cpus": sum(s.num_cpus for s in stages), "num_gpus": gpus}
    memory = sum(s.memory_gb for s in stages)
    if memory:
        resources["memory"] = int(memory * 1024**3)
    return resources


class Evaluator:
    """Ray actor: the models of an evaluation, loaded where Ray places it (a GPU node when the
    config asks for one), so the job driver on the head node holds no model."""

    def __init__(self, config: dict[str, Any], bundle_dir: str, num_gpus: float) -> None:
        from annotator.kinds import kind
        from annotator.models.bundle import Bundle
        from annotator.models.labeler.vllm import VLLMLabeler

        self.config = AnnotatorConfig.model_validate(config)
        self.bundle = Bundle.load(common.model_path(bundle_dir, self.config))
        self.labeler = None
        if "label" not in kind(self.bundle.kind).stages:
            return  # a kind without the LLM: its scoring loads its models
        self.labeler = VLLMLabeler(
            common.model_path(self.config.models.llm, self.config),
            self.bundle.emotion_token_ids,
            self.bundle.lora_dir,
            max_lora_rank=self.bundle.lora_rank,
            dtype=self.config.models.dtype,
            # On a GPU vLLM takes this fraction of the memory of the GPU it was given.
            **({"gpu_memory_utilization": 0.8 * num_gpus} if num_gpus > 0 else {}),
        )

    def use(self, bundle_dir: str) -> None:
        """Score another bundle of the same LLM and labels from now on (its adapter in the same
        engine)."""
        from annotator.models.bundle import Bundle

        bundle = Bundle.load(common.model_path(bundle_dir, self.config))
        if bundle.kind != self.bundle.kind:
            raise ValueError(f"{bundle_dir} is a {bundle.kind} bundle, not {self.bundle.kind}")
        if self.labeler is None:
            self.bundle = bundle
            return
        if bundle.emotion_token_ids != self.bundle.emotion_token_ids:
            raise ValueError(f"{bundle_dir} has other labels or LLM tokens than {self.bundle.root}")
        if bundle.lora_rank > self.bundle.lora_rank:
            raise ValueError(f"{bundle_dir}: LoRA rank {bundle.lora_rank} above the engine's")
        self.labeler.use_adapter(bundle.lora_dir)
        self.bundle = bundle

    def evaluate(self, examples: Sequence[Example], ablate: str | None = None) -> dict[str, Any]:
        return evaluate(self.config, self.bundle.root, examples, None, self.labeler, ablate)

    def close(self) -> None:
        if self.labeler is not None:
            self.labeler.close()


def evaluate_on_ray(
    config: AnnotatorConfig,
    bundle_dir: Path,
    examples: Sequence[Example],
    out: Path | None = None,
    ablate: str | None = None,
) -> dict[str, Any]:
    """``evaluate`` in an ``Evaluator`` actor on the Ray cluster (``ray_address``, else a local
    one); this process only gathers the result and writes ``out``. ``bundle_dir``: a local
    directory (uploaded to ``train.storage`` when that is object storage, so the actor's node
    can fetch it: ``common.ship``), an ``s3://`` URI or a ``registry:`` name."""
    (result,) = evaluate_bundles_on_ray(config, [(bundle_dir, examples)], ablate)
    if out is not None:
        write_evaluation(result, out)
    return result


def evaluate_bundles_on_ray(
    config: AnnotatorConfig,
    jobs: Sequence[tuple[Path, Sequence[Example]]],
    ablate: str | None = None,
) -> list[dict[str, Any]]:
    """Each (bundle, examples) scored in turn by one ``Evaluator`` actor: the models and the vLLM
    engine start once, each bundle's adapter is swapped in (bundles of one LLM and label set:
    the folds of a cross-validation)."""
    import ray

    from annotator.models.bundle import Bundle
    from annotator.pipeline.connection import connect

    if not jobs:
        return []
    connect(config)
    located = [common.ship(bundle_dir, config, "evaluate") for bundle_dir, _ in jobs]
    for where in located:
        if Path(where).is_dir():  # not uploaded: train.storage is local
            common.require_shared_storage(where, "the bundle")
    first = located[0]
    resources = evaluation_resources(config, Bundle.describe(first, config.s3, verify=False).kind)
    actor = (
        ray.remote(Evaluator)
        .options(**resources)
        .remote(config.model_dump(mode="json"), first, resources["num_gpus"])
    )
    results = []
    try:
        for k, (_, examples) in enumerate(jobs):
            if k:
                ray.get(actor.use.remote(located[k]))
            results.append(ray.get(actor.evaluate.remote(list(examples), ablate)))
        ray.get(actor.close.remote())
    finally:
        ray.kill(actor)
    return results
