"""EmoQ (arXiv 2509.15775): HuBERT frames and the transcript fused by the EmoQ-Former into one
soft token, projected into a LoRA-tuned LLM's prompt and served by vLLM; the posterior comes from
the emotion words' logits. Trained in two stages (stage1.py, stage2.py, export.py)."""

from annotator.kinds.plugin import LLM_LABEL, Kind, StageSpec

KIND = Kind(
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
    specs=(
        # HuBERT + EmoQ-Former + projector in one actor, so HuBERT's frames never leave it.
        # Paper profile: 0.10 of an 80 GB GPU.
        StageSpec(
            name="features",
            actor="annotator.kinds.emoq.stage:FeaturesStage",
            small={"batch_size": 8, "num_cpus": 0.25, "memory_gb": 1.0},
            paper={"batch_size": 32, "num_cpus": 2, "num_gpus": 0.1, "memory_gb": 6},
        ),
        LLM_LABEL,
    ),
    hears="audio+text",
    models=("models.hubert", "models.llm"),
    small_bundle="bundle",
)
