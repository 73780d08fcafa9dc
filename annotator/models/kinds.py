"""Bundle kinds: which emotion model a bundle holds, and what serving it takes.

A bundle's ``bundle.json`` names its kind (``kind``; a bundle written before kinds existed is
``emoq``). The kind says which files the bundle must hold and which model stages run after ASR in
the annotate graph (:mod:`annotator.pipeline.graph` builds the graph from it), and every output
row records it (``bundle_kind``) beside ``bundle_version``.

Adding a kind: one module with its model and its stage classes, one entry in :data:`KINDS`; the
README's contributing section walks through it.
"""

from __future__ import annotations

from dataclasses import dataclass

# What a bundle written before kinds existed is, and what output rows of that time hold.
DEFAULT_KIND = "emoq"


@dataclass(frozen=True)
class Kind:
    """One emotion model served by annotate.

    Attributes:
        name: as written in ``bundle.json`` and on every output row.
        summary: one line for ``annotator models show`` and the docs.
        required: files (relative to the bundle root) a bundle of this kind must hold.
        stages: the model stages after ASR, in graph order; each names a class of
            :mod:`annotator.pipeline.stages` (:data:`annotator.pipeline.graph.STAGES`) and a
            ``stages.<name>`` section of the configuration (resources, pool sizes).
        hears: what the model takes in: ``audio+text`` or ``audio``.
        context: the sink labels each finished file's segments together, in time order, with
            the bundle's context model (:mod:`annotator.pipeline.context`) before committing
            them; the kind's stages give each segment its utterance embeddings, not a label.
        models: the models its stages load besides the bundle: ``models.<field>`` of the
            configuration, or ``base.<key>`` of the bundle's record (checked before a run).
    """

    name: str
    summary: str
    required: tuple[str, ...]
    stages: tuple[str, ...]
    hears: str
    context: bool = False
    models: tuple[str, ...] = ()

    def served_models(self, models_config, bundle) -> dict[str, str]:
        """Where each of :attr:`models` comes from → its name, for this config and bundle."""
        out = {}
        for ref in self.models:
            source, _, key = ref.partition(".")
            out[ref] = getattr(models_config, key) if source == "models" else bundle.base[key]
        return out


KINDS: dict[str, Kind] = {
    "emoq": Kind(
        name="emoq",
        summary="EmoQ: HuBERT + EmoQ-Former (audio and transcript) -> one soft token -> LoRA LLM "
        "served by vLLM, posterior from the emotion words' logits",
        required=(
            "emoq_former.json",
            "emoq_former.safetensors",
            "projector.json",
            "projector.safetensors",
            "text-tokenizer/tokenizer_config.json",
            "lora/adapter_config.json",
            "lora/adapter_model.safetensors",
        ),
        stages=("features", "label"),
        hears="audio+text",
        models=("models.hubert", "models.llm"),
    ),
    "emosllm": Kind(
        name="emosllm",
        summary="EmoSLLM: a frozen SSL audio encoder's frames pooled by learned queries into "
        "several soft tokens, before the transcript in a LoRA LLM's prompt, served by vLLM",
        required=(
            "emosllm.json",
            "emosllm.safetensors",
            "lora/adapter_config.json",
            "lora/adapter_model.safetensors",
        ),
        stages=("emosllm", "label"),
        hears="audio+text",
        models=("base.audio_encoder", "models.llm"),
    ),
    "qieemo": Kind(
        name="qieemo",
        summary="Qieemo: a frozen CTC encoder's upper blocks fused, cross-attending its phonetic "
        "posteriors, pooled and classified; audio only, no LLM",
        required=("qieemo.json", "qieemo.safetensors"),
        stages=("qieemo",),
        hears="audio",
        models=("base.ctc_encoder",),
    ),
    "mister_e": Kind(
        name="mister_e",
        summary="MiSTER-E: per-utterance speech and text embeddings, then every utterance of a "
        "recording labelled from its neighbours by speech, text and co-attention experts mixed "
        "by a gate; no LLM",
        required=(
            "utterance_heads.json",
            "utterance_heads.safetensors",
            "mister_e.json",
            "mister_e.safetensors",
        ),
        stages=("utterances",),
        hears="audio+text",
        context=True,
        models=("base.speech_encoder", "base.text_encoder"),
    ),
}


class UnknownKind(ValueError):
    """A bundle of a kind this annotator does not serve."""


def kind(name: str) -> Kind:
    """The registered kind ``name``; :class:`UnknownKind` naming the known ones otherwise."""
    try:
        return KINDS[name]
    except KeyError:
        raise UnknownKind(
            f"bundle kind {name!r} is not one this annotator serves (known: {', '.join(KINDS)})"
        ) from None
