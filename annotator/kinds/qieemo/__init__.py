"""Qieemo (arXiv 2503.22687): a frozen CTC encoder's upper blocks fused, cross-attending its
phonetic posteriors, pooled and classified; audio only, no LLM."""

from annotator.kinds.plugin import Kind, StageSpec

KIND = Kind(
    name="qieemo",
    summary="Qieemo: a frozen CTC encoder's upper blocks fused, cross-attending its phonetic "
    "posteriors, pooled and classified; audio only, no LLM",
    required=("qieemo.json", "qieemo.safetensors"),
    specs=(
        # CTC encoder + fusion + classifier in one stage. Not yet measured; sized like the other
        # kinds' encoder stages (paper: HuBERT-large CTC + its head).
        StageSpec(
            name="qieemo",
            actor="annotator.kinds.qieemo.stage:QieemoStage",
            small={"batch_size": 8, "num_cpus": 0.25, "memory_gb": 1.0},
            paper={"batch_size": 32, "num_cpus": 2, "num_gpus": 0.1, "memory_gb": 6},
        ),
    ),
    hears="audio",
    models=("base.ctc_encoder",),
    small_bundle="qieemo-bundle",
)
