"""The label stage of every kind that ends in the LLM (annotator/kinds/plugin.py, ``LLM_LABEL``):
the prompt with the segment's soft token(s) from the stage before, served by vLLM with the
bundle's LoRA, gives the emotion."""

from __future__ import annotations

import threading
from typing import Any

import pyarrow as pa

from annotator.config import AnnotatorConfig
from annotator.models.prompt import channel_speaker
from annotator.pipeline.stages import (
    Stage,
    model_path,
    placed,
    segment_rows,
    where_am_i,
    with_emotions,
)


class LabelStage(Stage):
    """The prompt with the soft token(s) (``soft``: one per segment or several, flattened),
    served by vLLM with the bundle's LoRA: the emotion."""

    stage = "label"

    @classmethod
    def calls_at_once(cls, resources) -> int:
        """Two batches at once on a GPU: while one's prompts are built or its rows written, the
        engine works on the other's (VLLMLabeler's engine thread takes both), so the GPU does
        not drain between batches. One on CPU, where the engine has no idle time to fill and
        larger steps are slower: 474 against 535 prompts/s with two callers of 64 prompts
        against one, measured (benchmarks/labeler.py)."""
        return 2 if resources.num_gpus > 0 else 1

    def __init__(self, config: AnnotatorConfig, work_arrived: Any = None) -> None:
        from transformers import AutoTokenizer

        from annotator.models.bundle import Bundle
        from annotator.models.prompt import PromptEmbedder, local_model_dir
        from annotator.pipeline.warmup import start_when_raised

        self.config = config
        self.where = where_am_i()
        self._guard(config)
        self.llm = local_model_dir(model_path(config.models.llm, config))
        self.bundle = Bundle.load(model_path(config.models.bundle, config))
        self.bundle.check_llm_tokenizer(AutoTokenizer.from_pretrained(self.llm))
        self.prompts = PromptEmbedder.for_bundle(self.llm, self.bundle)
        # Abstention: under this confidence the emotion is written as unsure (posterior kept).
        below = config.models.unsure_below
        self.unsure_below = self.bundle.unsure_below if below is None else below
        # A split call's channel → its speaker's role, for the prompt (audio.channel_speakers).
        self.speakers = list(config.audio.channel_speakers)
        # The engine starts once the run has work (the ASR stage's first window), in a thread,
        # or else with the first segment: a run of skips needs none (pipeline/warmup.py).
        self.labeler = None
        self._starting = threading.Lock()
        # Prompts are built one batch at a time (the tokenizers are not made to be shared by
        # threads); the engine serves both batches' prompts together.
        self._building = threading.Lock()
        start_when_raised(work_arrived, self._engine)

    def _engine(self):
        """The vLLM engine, started by the first caller; a second waits for the first."""
        from annotator.models.labeler.vllm import VLLMLabeler

        with self._starting:
            if self.labeler is None:
                resources = self.config.stages.label
                self.labeler = VLLMLabeler(
                    self.llm,
                    self.bundle.emotion_token_ids,
                    self.bundle.lora_dir,
                    max_lora_rank=self.bundle.lora_rank,
                    dtype=self.config.models.dtype,
                    gpu_memory_utilization=resources.num_gpus if resources.num_gpus > 0 else 0.3,
                    in_process=resources.num_gpus == 0,  # this actor's own process, on CPU
                )
        return self.labeler

    def process(self, batch: pa.Table) -> pa.Table:
        import torch

        rows = segment_rows(batch)
        probs = None
        if rows:
            texts = batch["text"].to_pylist()
            channels = batch["channel"].to_pylist()
            soft = batch["soft"]
            with self._building:
                embeds = [
                    self.prompts.build(
                        texts[i],
                        torch.tensor(soft[i].as_py(), dtype=self.prompts.table.dtype),
                        speaker=channel_speaker(channels[i], self.speakers),
                    )
                    for i in rows
                ]
            probs = self._engine().posteriors(embeds)
            texts = [texts[i] for i in rows]
        batch = batch.drop_columns(["soft"])
        audio_only = [not t.strip() for t in texts] if rows else []
        labelled = with_emotions(batch, rows, probs, self.bundle, self.unsure_below, audio_only)
        return placed(labelled, "label", self.where)
