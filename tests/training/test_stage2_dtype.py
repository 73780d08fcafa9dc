"""Stage 2 with a half-precision base LLM (``models.dtype``): the frozen base in bf16, everything
trained in fp32, and a training step that runs (on the CPU: bf16 matmuls exist there too)."""

from __future__ import annotations

import torch

from annotator.config import load_config


def test_stage2_bf16_base_with_fp32_trainables_takes_a_step(small_home, tmp_path):
    from transformers import AutoConfig

    from annotator.kinds.emoq import stage1, stage2
    from annotator.schema import label_set
    from training import common

    config = load_config(None, models={"home": str(small_home), "dtype": "bfloat16"})
    labels = list(label_set(config.train.label_set))
    stage1_model, _ = stage1.build(config, labels)
    (tmp_path / "stage1").mkdir()
    stage1_model.former.save(tmp_path / "stage1")
    model, text_tok, prompts = stage2.build(config, tmp_path / "stage1", labels)

    frozen = {n: p for n, p in model.named_parameters() if not p.requires_grad}
    trained = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert frozen and all(p.dtype == torch.bfloat16 for p in frozen.values())
    assert all(n.startswith("llm.") for n in frozen)  # the base LLM is all that is frozen
    assert all(p.dtype == torch.float32 for p in trained.values())
    assert any("lora_B" in n for n in trained)
    assert any(n.startswith("projector.") for n in trained)
    assert any(n.startswith("former.") for n in trained)

    audio_dim = AutoConfig.from_pretrained(common.model_path(config.models.hubert, config))
    gen = torch.Generator().manual_seed(0)
    items = [
        common.Item(torch.randn(5 + k, audio_dim.hidden_size, generator=gen), f"words {k}", k % 4)
        for k in range(4)
    ]
    batch = stage2.collate(text_tok, prompts, labels, config.train.emotion_token_weight, items)
    optimizer = torch.optim.AdamW(trained.values(), lr=1e-3)
    lora_b = {n: p.detach().clone() for n, p in trained.items() if "lora_B" in n}
    base = {n: p.detach().clone() for n, p in list(frozen.items())[:3]}
    model.train()
    loss = stage2.batch_loss(model, batch)
    loss.backward()
    optimizer.step()

    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    assert all(trained[n].dtype == torch.float32 for n in lora_b)
    assert any(not torch.equal(trained[n], before) for n, before in lora_b.items())
    assert all(torch.equal(frozen[n], before) for n, before in base.items())


def test_training_frames_are_computed_as_the_features_stage_computes_them(small_home, tmp_path):
    """featurize runs the frozen HuBERT in ``models.features_dtype`` (float16 on a GPU by
    default, as the features stage runs it), hands the frames on as float32, and they equal the
    serving encoder's frames in that dtype, not the float32 ones."""
    from annotator.audio.synth import encode, speak
    from annotator.models.hubert import HubertFeatures
    from annotator.schema import label_set
    from training import common
    from training.data import Example, load_audios

    examples = []
    for k, text in enumerate(["the meeting is at ten", "I am so happy today"]):
        path = tmp_path / f"{k}.wav"
        encode(speak(text), path)
        examples.append(Example(str(path), text, "neutral", "en-us", "train"))
    audios = load_audios(examples)
    frames = {}
    for dtype in ("float32", "bfloat16"):
        config = load_config(
            None,
            models={"home": str(small_home), "features_dtype": dtype},
            train={"features": "memory"},
        )
        labels = list(label_set(config.train.label_set))
        items = common.featurize(examples, labels, config)
        assert all(i.frames.dtype == torch.float32 for i in items)
        served = HubertFeatures(
            common.model_path(config.models.hubert, config), dtype=getattr(torch, dtype)
        )
        for audio, item in zip(audios, items, strict=True):
            alone, _ = served([audio])
            torch.testing.assert_close(item.frames, alone[0].float(), atol=1e-2, rtol=2e-2)
        frames[dtype] = items[0].frames
    assert (frames["bfloat16"] - frames["float32"]).abs().max() > 1e-3  # the dtype did act
