"""Shape and mask facts of the EmoQ-Former and of HuBERT + EmoQ-Former + projector together."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from annotator.kinds.emoq.emoq_former import EmoQFormer
from annotator.models.bundle import Bundle

TOL = 1e-5  # float32; batching reorders reductions, nothing more


@pytest.fixture(scope="module")
def former(small_dir):
    return EmoQFormer.load(small_dir / "bundle").eval()


def _inputs(former, b=3, frames=40, tokens=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    audio = torch.randn(b, frames, former.config.audio_dim, generator=g)
    ids = torch.randint(1000, 2000, (b, tokens), generator=g)
    return audio, ids


def test_embedding_is_unit_length_and_sized(former):
    audio, ids = _inputs(former)
    e = former(audio, torch.ones(3, 40, dtype=torch.bool), ids, torch.ones(3, 12, dtype=torch.bool))
    assert e.shape == (3, former.config.embed_dim)
    assert torch.allclose(e.norm(dim=-1), torch.ones(3), atol=1e-6)


def test_padded_frames_and_tokens_do_not_change_e(former):
    audio, ids = _inputs(former)
    audio_mask = torch.ones(3, 40, dtype=torch.bool)
    audio_mask[1, 25:] = False
    text_mask = torch.ones(3, 12, dtype=torch.bool)
    text_mask[2, 7:] = False
    with torch.no_grad():
        e = former(audio, audio_mask, ids, text_mask)
        audio2, ids2 = audio.clone(), ids.clone()
        audio2[1, 25:] = 1e3 * torch.randn(15, former.config.audio_dim)
        ids2[2, 7:] = 5
        e2 = former(audio2, audio_mask, ids2, text_mask)
        # ...while a real frame or token does change it (the masks are not hiding everything).
        audio3 = audio.clone()
        audio3[1, 3] += 5.0
        e3 = former(audio3, audio_mask, ids, text_mask)
    assert torch.allclose(e, e2, atol=TOL)
    assert (e3[1] - e[1]).abs().max() > 1e-4


def test_batch_equals_items_one_by_one(former):
    audio, ids = _inputs(former)
    lengths_a, lengths_t = [40, 22, 31], [12, 5, 9]
    audio_mask = torch.arange(40)[None] < torch.tensor(lengths_a)[:, None]
    text_mask = torch.arange(12)[None] < torch.tensor(lengths_t)[:, None]
    with torch.no_grad():
        batch = former(audio, audio_mask, ids, text_mask)
        for i in range(3):
            one = former(
                audio[i : i + 1, : lengths_a[i]],
                torch.ones(1, lengths_a[i], dtype=torch.bool),
                ids[i : i + 1, : lengths_t[i]],
                torch.ones(1, lengths_t[i], dtype=torch.bool),
            )
            assert torch.allclose(batch[i], one[0], atol=TOL), (batch[i] - one[0]).abs().max()


def test_starts_from_the_pretrained_encoder(small_dir):
    from safetensors.torch import load_file

    bert = load_file(small_dir / "text-encoder" / "model.safetensors")
    former = EmoQFormer.from_pretrained(str(small_dir / "text-encoder"), audio_dim=96, num_layers=2)
    assert former.config.num_layers == 2
    key = "encoder.layer.1.attention.self.query.weight"
    prefix = "" if key in bert else "bert."
    assert torch.equal(former.layers[1].self_attn.query.weight, bert[prefix + key])
    assert torch.equal(
        former.layers[1].ffn.output.weight, bert[prefix + "encoder.layer.1.output.dense.weight"]
    )
    assert torch.equal(
        former.word_embeddings.weight, bert[prefix + "embeddings.word_embeddings.weight"]
    )


def test_embedder_batch_equals_single_items(small_dir):
    """HuBERT + EmoQ-Former + projector: waveforms of different lengths in one batch, run as
    groups of like length (padding within 25 %), each item given back in its place with what it
    gets alone."""
    from annotator.kinds.emoq.embedder import EmotionEmbedder
    from annotator.models.length_groups import MAX_PADDING

    bundle = Bundle.load(small_dir / "bundle")
    embedder = EmotionEmbedder(bundle, str(small_dir / "hubert"))
    rng = np.random.default_rng(0)
    lengths = (16000, 9000, 23456, 9400, 15200, 4000)
    waves = [rng.standard_normal(n).astype(np.float32) * 0.1 for n in lengths]
    texts = ["I am so happy today", "no", "why would you ever do that to me", "fine", "okay", "hm"]
    e, soft = embedder(waves, texts)
    assert soft.shape == (len(waves), 128)
    assert embedder.samples == sum(lengths)
    assert sum(lengths) < embedder.padded_samples <= MAX_PADDING * sum(lengths)
    for i in range(len(waves)):
        e1, soft1 = embedder([waves[i]], [texts[i]])
        assert torch.allclose(e[i], e1[0], atol=1e-4), (e[i] - e1[0]).abs().max()
        assert torch.allclose(soft[i], soft1[0], atol=1e-4)


def test_embedder_in_half_precision_gives_the_float32_soft_tokens(small_dir):
    """The features stage runs in float16 on GPUs (features_dtype auto); bfloat16 takes the same
    path on this CPU: every weight and activation in half precision, the same soft tokens."""
    from annotator.kinds.emoq.embedder import EmotionEmbedder
    from annotator.models.hubert import features_dtype

    assert features_dtype("auto", "cuda:0") == torch.float16
    assert features_dtype("auto", "cpu") == torch.float32
    bundle = Bundle.load(small_dir / "bundle")
    full = EmotionEmbedder(bundle, str(small_dir / "hubert"))
    half = EmotionEmbedder(bundle, str(small_dir / "hubert"), dtype=torch.bfloat16)
    for module in (half.hubert.model, half.former, half.projector):
        assert {p.dtype for p in module.parameters()} == {torch.bfloat16}
    rng = np.random.default_rng(1)
    waves = [rng.standard_normal(n).astype(np.float32) * 0.1 for n in (16000, 9000, 23456)]
    texts = ["I am so happy today", "no", "why would you ever do that to me"]
    _, soft32 = full(waves, texts)
    _, soft16 = half(waves, texts)
    assert soft16.dtype == torch.bfloat16
    cosine = torch.nn.functional.cosine_similarity(soft16.float(), soft32, dim=-1)
    assert bool((cosine > 0.99).all()), cosine
    assert not torch.allclose(soft16.float(), soft32)  # really computed in half precision


def test_e_moves_when_only_the_transcript_or_only_the_audio_changes(small_dir):
    """Both inputs reach e through the real path (waveform → HuBERT, transcript → the
    EmoQ-Former's tokenizer): one changed while the other is held fixed moves e well beyond
    float noise, and holding both fixed does not move it. A disconnected path fails here."""
    from annotator.kinds.emoq.embedder import EmotionEmbedder

    embedder = EmotionEmbedder(Bundle.load(small_dir / "bundle"), str(small_dir / "hubert"))
    rng = np.random.default_rng(1)
    wave = rng.standard_normal(16000).astype(np.float32) * 0.1
    other_wave = rng.standard_normal(16000).astype(np.float32) * 0.1
    text, other_text = "I am so happy today", "I am so angry today"
    with torch.no_grad():
        e, _ = embedder([wave, wave, other_wave, wave], [text, other_text, text, text])
    same = (e[3] - e[0]).abs().max().item()
    by_text = (e[1] - e[0]).abs().max().item()
    by_audio = (e[2] - e[0]).abs().max().item()
    assert same < 1e-5
    assert by_text > 1e-3, by_text
    assert by_audio > 1e-3, by_audio


def test_frames_are_standardised_by_the_training_splits_statistics(former, tmp_path):
    """frame_statistics takes the real frames only (padding excluded); once set, e depends on
    each frame's deviation from the training mean in units of its spread, so a component shared
    by every frame (what drowns the audio path of a frozen encoder) is taken out; a former saved
    before the statistics existed loads as the identity."""
    import copy

    from safetensors.torch import load_file, save_file

    from training.common import frame_statistics

    g = torch.Generator().manual_seed(1)
    dim = former.config.audio_dim
    spread = torch.rand(dim, generator=g) + 0.5
    offset = 3 * torch.randn(dim, generator=g)
    frames = torch.randn(2, 4, 30, dim, generator=g) * spread + offset
    mask = torch.ones(2, 4, 30, dtype=torch.bool)
    mask[:, 1, 20:] = False
    frames[~mask] = 1e3  # padding that must not count
    mean, inv_std = frame_statistics(zip(frames, mask, strict=True), "cpu")
    real = frames[mask].double()
    torch.testing.assert_close(mean, real.mean(0).float())
    torch.testing.assert_close(inv_std, (1 / real.std(0, unbiased=False)).float())

    standardised = copy.deepcopy(former)
    standardised.set_frame_statistics(mean, inv_std)
    audio, ids = _inputs(former)
    audio_mask = torch.ones(3, 40, dtype=torch.bool)
    text_mask = torch.ones(3, 12, dtype=torch.bool)
    common_part = 5 * torch.randn(dim, generator=g)
    shifted = copy.deepcopy(former)
    shifted.set_frame_statistics(mean + common_part, inv_std)
    with torch.no_grad():
        e = standardised(audio, audio_mask, ids, text_mask)
        torch.testing.assert_close(
            shifted(audio + common_part, audio_mask, ids, text_mask), e, atol=TOL, rtol=0
        )
        plain = former(audio, audio_mask, ids, text_mask)
        assert (e - plain).abs().max() > 1e-2  # the statistics act

    former.save(tmp_path)
    state = load_file(tmp_path / "emoq_former.safetensors")
    save_file(
        {k: v for k, v in state.items() if not k.startswith("frame_")},
        tmp_path / "emoq_former.safetensors",
    )
    old = EmoQFormer.load(tmp_path)
    assert not old.frame_mean.any() and bool((old.frame_inv_std == 1).all())
    with torch.no_grad():
        torch.testing.assert_close(old(audio, audio_mask, ids, text_mask), plain, atol=0, rtol=0)
