"""EmoSLLM (arXiv 2508.14130): a frozen SSL audio encoder's frames pooled by learned queries into
several soft tokens, before the transcript in a LoRA LLM's prompt, served by vLLM."""

from annotator.kinds.plugin import LLM_LABEL, Kind, StageSpec

KIND = Kind(
    name="emosllm",
    summary="EmoSLLM: a frozen SSL audio encoder's frames pooled by learned queries into "
    "several soft tokens, before the transcript in a LoRA LLM's prompt, served by vLLM",
    required=(
        "emosllm.json",
        "emosllm.safetensors",
        "lora/adapter_config.json",
        "lora/adapter_model.safetensors",
    ),
    specs=(
        # The audio encoder + query-pooling mapper, before label. Not yet measured; sized like
        # the other kinds' encoder stages (paper: WavLM-Large + mapper).
        StageSpec(
            name="emosllm",
            actor="annotator.kinds.emosllm.stage:EmoSLLMStage",
            small={"batch_size": 8, "num_cpus": 0.25, "memory_gb": 1.0},
            paper={"batch_size": 32, "num_cpus": 2, "num_gpus": 0.1, "memory_gb": 6},
        ),
        LLM_LABEL,
    ),
    hears="audio+text",
    models=("base.audio_encoder", "models.llm"),
    audio_first=True,
    small_bundle="emosllm-bundle",
)
