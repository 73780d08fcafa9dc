"""Training an EmoSLLM bundle on Ray Train (annotator/kinds/emosllm/model.py).

The audio encoder stays frozen: each worker runs it once over its share of the ``train`` split
(``common.featurize`` with the bundle's encoder). The query-pooling mapper and the LLM's LoRA train
with the LLM kinds' token-weighted autoregressive loss (Eq. 7, ``train.emotion_token_weight``) on the
answer ``Emotion: <word>``, the prompt built as serving builds it (the bundle's soft-token count,
the audio before the transcript): one stage on stage 2's schedule (``train.epochs_stage2``,
``train.lr_stage2``), the global batch ``train.batch_size`` split over the workers with equal steps
on every rank (``common.shard_indices``, ``common.epoch_loader``). The paper's optional
ASR-alignment stage before emotion is not built. The result is exported as a new bundle from the
checkpoint's tensors (the base LLM is not rebuilt for it).
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn

from annotator.config import AnnotatorConfig
from training import common
from training.llm import with_soft_tokens

MAPPER = "mapper."  # the mapper's prefix in the model's state dict (EmoSLLMModel, below)


def build(config: AnnotatorConfig, start, labels):
    """(model, prompts): the start bundle's mapper and LoRA on the frozen base LLM (``models.llm``,
    as serving loads it, in ``stage2.llm_dtype``; the trained parts stay fp32), and the prompts
    serving builds for the bundle (its soft-token count and layout)."""
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from annotator.kinds.emosllm.model import QueryPoolingMapper
    from annotator.models.lora import lora_config
    from annotator.models.prompt import PromptEmbedder
    from training.llm import llm_dtype, load_adapter

    llm_dir = common.model_path(config.models.llm, config)
    llm = AutoModelForCausalLM.from_pretrained(llm_dir, dtype=llm_dtype(config))
    peft_model = get_peft_model(
        llm,
        lora_config(start.lora_rank, dropout=config.train.lora_dropout),
        autocast_adapter_dtype=True,
    )
    load_adapter(peft_model, start.root, config.models.llm, start.lora_rank)
    prompts = PromptEmbedder(
        AutoTokenizer.from_pretrained(llm_dir),
        llm.get_input_embeddings().weight.detach(),
        labels,
        None,
        config.train.inputs,
        audio_slots=start.soft_tokens,
        audio_first=start.audio_first,
    )
    return EmoSLLMModel(QueryPoolingMapper.load(start.root).train(), peft_model), prompts


def loop(cfg: dict[str, Any]) -> None:
    import ray.train
    import ray.train.torch

    from annotator.models.bundle import Bundle
    from training.llm import answer_batch, batch_loss

    config, labels, _, items = common.worker_setup(cfg)
    train = config.train
    device = ray.train.torch.get_device()
    per_worker = common.local_batch_size(train.batch_size, ray.train.get_context().get_world_size())
    model, prompts = build(config, Bundle.load(common.model_path(cfg["start"], config)), labels)
    model = ray.train.torch.prepare_model(model)
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=train.lr_stage2
    )
    start = common.load_checkpoint(model, optimizer, cfg.get("resume_from"))
    to_batch = partial(answer_batch, prompts, labels, train.emotion_token_weight)
    for epoch in range(start, train.epochs_stage2):
        loader = common.epoch_loader(
            items, to_batch, per_worker, train.seed + epoch, common.streamed_by_source(items)
        )
        tally = common.train_epoch(
            model, optimizer, loader, device, lambda b: batch_loss(model, b), size_key="frames"
        )
        common.save_checkpoint(model, optimizer, epoch, tally.metrics(device))


def train_emosllm(
    config: AnnotatorConfig,
    manifest: Path,
    start_bundle: Path,
    out: Path,
    name: str = "emosllm",
):
    """Train from ``start_bundle`` (an untrained one from ``annotator models init``, or a trained
    one to fine-tune) on ``manifest``'s train split (labels ``train.label_set``); export the
    result to ``out``."""
    import json

    from transformers import AutoConfig, AutoTokenizer

    from annotator.kinds.emosllm.model import QueryPoolingMapper, write_emosllm_bundle
    from annotator.models.bundle import Bundle
    from annotator.schema import label_set
    from training.llm import ExportError, adapter_tensors, lora_shapes, training_record

    config = config.for_kind("emosllm")  # its own schedule (train.schedules.emosllm)
    start = Bundle.load(common.model_path(str(start_bundle), config))
    if start.kind != "emosllm":
        raise ValueError(f"{start_bundle} is a {start.kind} bundle, not an EmoSLLM one")
    llm_dir = common.model_path(config.models.llm, config)
    start.check_llm_tokenizer(AutoTokenizer.from_pretrained(llm_dir))  # its LoRA's LLM
    checkpoint = common.run_trainer(
        loop,
        {
            "config": config.model_dump(mode="json"),
            "examples": common.training_rows(manifest, label_set(config.train.label_set), config),
            "start": common.ship(str(start_bundle), config, name),
            "encoder": start.base["audio_encoder"],
        },
        name,
        config,
    )
    state = common.checkpoint_state(checkpoint)
    mapper = QueryPoolingMapper.load(start.root)
    mapper_state = {k.removeprefix(MAPPER): v for k, v in state.items() if k.startswith(MAPPER)}
    try:
        mapper.load_state_dict(mapper_state, strict=True)
    except RuntimeError as exc:
        raise ExportError(f"checkpoint {checkpoint} does not fit {start_bundle}: {exc}") from None
    adapter = adapter_tensors(
        state,
        lora_shapes(AutoConfig.from_pretrained(llm_dir), start.lora_rank),
        f"checkpoint {checkpoint}",
        config.models.llm,
        start.lora_rank,
    )
    progress = json.loads((Path(checkpoint) / "progress.json").read_text())
    extra = {
        **training_record(config),
        "manifest": str(manifest),
        "epochs": config.train.epochs_stage2,
        "loss": progress.get("loss"),
        "started_from": start.version,
    }
    extra.pop("stage1")  # EmoSLLM has no stage 1
    return write_emosllm_bundle(
        Path(out),
        mapper.eval(),
        adapter,
        list(label_set(config.train.label_set)),
        AutoTokenizer.from_pretrained(llm_dir),
        {**start.base, "llm": config.models.llm},
        start.lora_rank,
        extra,
        lora_dropout=config.train.lora_dropout,
    )


class EmoSLLMModel(nn.Module):
    """EmoSLLM (annotator/kinds/emosllm/model.py): the query-pooling mapper's soft tokens in the LoRA
    LLM's prompt; the audio encoder is frozen and runs before (its frames are the input)."""

    INPUTS = ("frames", "frame_mask", "prompt_ids", "prompt_mask", "audio_position")

    def __init__(self, mapper, llm) -> None:
        super().__init__()
        self.mapper, self.llm = mapper, llm

    def forward(self, frames, frame_mask, prompt_ids, prompt_mask, audio_position):
        soft = self.mapper(frames, frame_mask)
        embeds = with_soft_tokens(self.llm.get_input_embeddings()(prompt_ids), audio_position, soft)
        return self.llm(inputs_embeds=embeds, attention_mask=prompt_mask).logits


def retrain(config: AnnotatorConfig, manifest, start: str, out: Path, name: str):
    """``annotator review retrain``: :func:`train_emosllm` from the served bundle at ``start``."""
    return train_emosllm(config, manifest, start, Path(out), name=name)
