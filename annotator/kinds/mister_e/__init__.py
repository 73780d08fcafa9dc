"""MiSTER-E (arXiv 2602.23300): per-utterance speech and text embeddings, then every utterance
of a recording labelled from its neighbours by speech, text and co-attention experts mixed by a
gate; no LLM. Its context model labels a finished file's segments together, in a pool of actors
the sink feeds (annotator/pipeline/context.py)."""

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
    # The context model: ~67 M parameters at paper size, one window of 256 utterances at a time
    # (benchmarks/context_memory.py), ~385 segments/s an actor on a CPU thread
    # (benchmarks/context_pool.py). Paper: one actor a node, ~25,000/s on 64 nodes against the
    # ~3,800/s their encoders produce. Small: no CPU reserved, as on the driver before: on a
    # 2-CPU node the ASR and utterance actors and a decode task reserve them all, and a context
    # actor holding a share would leave a decode task no room (the run stalls).
    context=StageSpec(
        name="context",
        actor="annotator.kinds.mister_e.context:ContextLabeller",
        small={"num_cpus": 0, "memory_gb": 0.25},
        paper={"num_cpus": 2, "memory_gb": 4},
    ),
    models=("base.speech_encoder", "base.text_encoder"),
    small_bundle="mister-e-bundle",
    # The published code's (iiscleap/MiSTER-E): focal γ 3 (the loss's own default); at paper
    # size its context-model schedule, Adam 1e-5 for 100 epochs, 8 conversations a batch (AdamW
    # here, weight decay 0.01). Its stage-1 (utterance heads) schedule is not published: the
    # top-level train.epochs_stage1 / lr_stage1. Small: the toy schedule EmoQ's tests tuned.
    schedule={
        "small": {"gamma": 3.0},
        "paper": {"gamma": 3.0, "lr_stage2": 1e-5, "epochs_stage2": 100, "batch_size": 8},
    },
)
