"""MiSTER-E (arXiv 2602.23300): per-utterance speech and text embeddings, then every utterance
of a recording labelled from its neighbours by speech, text and co-attention experts mixed by a
gate; no LLM. Its context model runs where a finished file's segments are together (the sink)."""

from annotator.kinds.plugin import Kind, StageSpec

KIND = Kind(
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
    specs=(
        # The speech and text encoders + utterance heads. Not yet measured; sized like the other
        # kinds' encoder stages.
        StageSpec(
            name="utterances",
            actor="annotator.kinds.mister_e.stage:UtterancesStage",
            small={"batch_size": 8, "num_cpus": 0.25, "memory_gb": 1.0},
            paper={"batch_size": 32, "num_cpus": 2, "num_gpus": 0.1, "memory_gb": 6},
        ),
    ),
    hears="audio+text",
    context="annotator.kinds.mister_e.context:ContextLabeller",
    models=("base.speech_encoder", "base.text_encoder"),
    small_bundle="mister-e-bundle",
)
