"""Stage 2 (§2.3–2.4): the stage-1 EmoQ-Former, a projector and a LoRA on the LLM, co-trained
with the token-weighted autoregressive loss (Eq. 7): the answer "Emotion: <word>" is the target,
its emotion-word tokens weigh ``train.emotion_token_weight``.

When the manifest has a ``dev`` split (MELD's), every epoch also scores it as serving does (the
emotion word's first token, the highest among the labels' first tokens, after the prompt) and
reports ``dev_wa``/``dev_ua``/``dev_wf1``; the run's result is then the checkpoint with the best
dev UA, not the last one."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import torch

from annotator.config import AnnotatorConfig
from annotator.kinds.emoq.stage1 import standardise_frames
from annotator.kinds.emoq.train_models import Stage2Model
from annotator.models.transcript import TranscriptTokenizer
from training import common
from training.llm import answer_batch, batch_logits, batch_loss, llm_dtype, load_adapter
from training.metrics import scores as metrics_of


def build(config: AnnotatorConfig, stage1_dir: Path, labels, from_bundle: Path | None = None):
    """(model, transcript tokenizer, PromptEmbedder): base LLM frozen, LoRA + projector + former
    train. The transcript tokenizer cuts transcripts for both the EmoQ-Former and the prompt, as
    serving does (annotator/models/transcript.py). ``from_bundle``: start the projector and the
    LoRA from a served bundle's (fine-tuning it on reviewed labels; ``stage1_dir`` is then that
    bundle too), else fresh.

    The frozen base LLM is loaded in :func:`llm_dtype`; everything trained (EmoQ-Former,
    projector, LoRA) stays fp32, so AdamW's updates are not rounded away (PEFT's
    ``autocast_adapter_dtype`` casts bf16/fp16 adapter weights up to fp32)."""
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from annotator.kinds.emoq.emoq_former import EmoQFormer
    from annotator.kinds.emoq.projector import Projector
    from annotator.models.lora import lora_config
    from annotator.models.prompt import PromptEmbedder

    llm_dir = common.model_path(config.models.llm, config)
    former = EmoQFormer.load(Path(stage1_dir)).train()
    llm = AutoModelForCausalLM.from_pretrained(llm_dir, dtype=llm_dtype(config))
    projector = Projector(former.config.embed_dim, llm.config.hidden_size)
    peft_model = get_peft_model(
        llm,
        lora_config(config.train.lora_rank, dropout=config.train.lora_dropout),
        autocast_adapter_dtype=True,
    )
    if from_bundle is not None:
        projector = Projector.load(Path(from_bundle)).train()
        load_adapter(peft_model, Path(from_bundle), config.models.llm, config.train.lora_rank)
    tokenizer = AutoTokenizer.from_pretrained(llm_dir)
    transcripts = TranscriptTokenizer.load(common.model_path(config.models.text_encoder, config))
    prompts = PromptEmbedder(
        tokenizer,
        llm.get_input_embeddings().weight.detach(),
        labels,
        transcripts,
        config.train.inputs,
    )
    return Stage2Model(former, projector, peft_model), transcripts, prompts


def collate(transcripts, prompts, labels, weight: float, items) -> dict[str, torch.Tensor]:
    """A list of examples → the model's inputs, the answer targets and their Eq. 7 weights: the
    ``answer_batch`` and the transcripts' ids for the EmoQ-Former."""
    text_ids, text_mask = transcripts([i.text for i in items])
    return {**answer_batch(prompts, labels, weight, items), "ids": text_ids, "text_mask": text_mask}


def loop(cfg: dict[str, Any]) -> None:
    import ray.train
    import ray.train.torch

    config, labels, _, items = common.worker_setup(cfg)
    dev_examples, dev_items = common.worker_share(cfg, config, labels, "dev")
    train = config.train
    device = ray.train.torch.get_device()
    per_worker = common.local_batch_size(train.batch_size, ray.train.get_context().get_world_size())
    stage1 = Path(common.model_path(cfg["stage1"], config))
    from_bundle = cfg.get("from_bundle")
    from_bundle = Path(common.model_path(from_bundle, config)) if from_bundle else None
    model, text_tok, prompts = build(config, stage1, labels, from_bundle)
    model = ray.train.torch.prepare_model(
        model, parallel_strategy_kwargs={"find_unused_parameters": True}
    )
    # The stage-1 EmoQ-Former is fine-tuned gently (lr_stage1); projector and LoRA start fresh.
    module = getattr(model, "module", model)
    former = [p for p in module.former.parameters() if p.requires_grad]
    ids = {id(p) for p in former}
    rest = [p for p in model.parameters() if p.requires_grad and id(p) not in ids]
    optimizer = torch.optim.AdamW(
        [{"params": former, "lr": train.lr_stage1}, {"params": rest, "lr": train.lr_stage2}]
    )
    start = common.load_checkpoint(model, optimizer, cfg.get("resume_from"))
    fresh = start == 0 and from_bundle is None and train.epochs_stage1 == 0
    if fresh and train.standardise_frames:
        # Table 6's "no stage 1": the former starts here as initialised, its frames unstandardised.
        standardise_frames(module.former, items, per_worker, device)
    stop_after = cfg.get("stop_after_epochs")
    to_batch = partial(collate, text_tok, prompts, labels, train.emotion_token_weight)
    for epoch in range(start, train.epochs_stage2):
        loader = common.epoch_loader(
            items, to_batch, per_worker, train.seed + epoch, common.streamed_by_source(items)
        )
        tally = common.train_epoch(
            model, optimizer, loader, device, lambda b: batch_loss(model, b), size_key="frames"
        )
        metrics = tally.metrics(device)
        if dev_examples:
            y_true, y_pred = dev_predictions(module, dev_items, to_batch, prompts, device)
            scored = metrics_of(y_true, y_pred, len(labels))
            metrics.update({f"dev_{k}": v for k, v in scored.items()})
        common.save_checkpoint(model, optimizer, epoch, metrics)
        if stop_after is not None and epoch + 1 - start >= stop_after:
            break  # a deliberately stopped run (tests of resume)


def dev_predictions(module, items, to_batch, prompts, device) -> tuple[list[int], list[int]]:
    """(truth, prediction) of every worker's dev share, gathered: the prediction is the label whose
    first token scores highest right after the prompt, as the label stage reads vLLM's logprobs.
    Runs the unwrapped module (no DDP collectives: shares may take different batch counts)."""
    import torch.distributed as dist

    from annotator.models.prompt import emotion_token_ids

    token_ids = torch.tensor(emotion_token_ids(prompts.tokenizer, prompts.labels), device=device)
    mine: list[tuple[int, int]] = []
    module.eval()
    with torch.no_grad():
        for start in range(0, len(items), 8):
            chunk = items[start : start + 8]
            batch = common.to_device(to_batch(chunk), device)
            logits = batch_logits(module, batch)
            # The emotion word's first token is the first weighted one; the logits one position
            # earlier predict it (causal: the answer after it is never seen).
            before = (batch["weights"] > 0).float().argmax(dim=1) - 1
            scores = logits[torch.arange(len(chunk), device=device), before][:, token_ids]
            mine += [(i.label, int(p)) for i, p in zip(chunk, scores.argmax(-1), strict=True)]
    module.train()
    pairs = [mine]
    if dist.is_available() and dist.is_initialized():
        pairs = [None] * dist.get_world_size()
        dist.all_gather_object(pairs, mine)
    flat = [pair for share in pairs for pair in share]
    return [t for t, _ in flat], [p for _, p in flat]


def train_stage2(
    config: AnnotatorConfig,
    manifest: Path,
    stage1_dir: Path,
    name: str = "stage2",
    stop_after_epochs: int | None = None,
    from_bundle: Path | None = None,
) -> str:
    """Run stage 2 on Ray Train; returns the checkpoint directory to export (see export.py): the
    best by dev UA when the manifest has a dev split, else the last. The manifest's rows and the
    stage-1 (or served bundle's) weights reach the workers as objects (``common.ship``)."""
    from annotator.schema import label_set

    config = config.for_kind("emoq")  # its own schedule (train.schedules.emoq)
    rows = common.training_rows(manifest, label_set(config.train.label_set), config)
    has_dev = any(row["split"] == "dev" for row in rows)
    return common.run_trainer(
        loop,
        {
            "config": config.model_dump(mode="json"),
            "examples": rows,
            "stage1": common.ship(stage1_dir, config, name),
            "stop_after_epochs": stop_after_epochs,
            "from_bundle": common.ship(from_bundle, config, name),
        },
        name,
        config,
        best_by="dev_ua" if has_dev else None,
    )
