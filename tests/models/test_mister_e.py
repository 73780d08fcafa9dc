"""MiSTER-E's conversation model (annotator/kinds/mister_e/model.py) and loss: padding is masked
everywhere (the published code's defect is not copied), context reaches every utterance, each
expert hears its own stream, the gate mixes the experts' logits, and a few steps fit a
conversation whose labels only context can tell apart."""

from __future__ import annotations

import pytest
import torch

from annotator.kinds.mister_e.model import EXPERTS, MisterE, MisterEConfig
from annotator.kinds.mister_e.train import mister_e_loss

SPEECH, TEXT, LABELS = 12, 10, 4


def _model(seed: int = 0, **sizes) -> MisterE:
    torch.manual_seed(seed)
    config = MisterEConfig(
        SPEECH, TEXT, LABELS, hidden=16, gru_layers=2, coattention_layers=2, heads=4, **sizes
    )
    return MisterE(config).eval()


def _conversation(length: int, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(1, length, SPEECH, generator=g), torch.randn(1, length, TEXT, generator=g)


def _padded(speech, text, extra: int, junk: float = 50.0):
    """The conversation followed by ``extra`` padded utterances full of junk."""
    pad_s = torch.full((1, extra, SPEECH), junk)
    pad_t = torch.full((1, extra, TEXT), -junk)
    mask = torch.tensor([[True] * speech.shape[1] + [False] * extra])
    return torch.cat([speech, pad_s], 1), torch.cat([text, pad_t], 1), mask


def test_padded_utterances_change_nothing_about_the_real_ones():
    model = _model()
    speech, text = _conversation(5)
    alone = model(speech, text, torch.ones(1, 5, dtype=torch.bool))
    s, t, mask = _padded(speech, text, extra=4)
    padded = model(s, t, mask)
    for key in ("logits", "experts", "gate"):
        torch.testing.assert_close(padded[key][:, :5], alone[key], atol=1e-5, rtol=1e-4)
        assert padded[key][:, 5:].abs().max() == 0  # a padded utterance gets no label
    # In a batch beside a longer conversation, too (the GRU runs over each one's own length).
    longer_s, longer_t = _conversation(9, seed=2)
    batch = model(
        torch.cat([s, longer_s]),
        torch.cat([t, longer_t]),
        torch.cat([mask, torch.ones(1, 9).bool()]),
    )
    torch.testing.assert_close(batch["logits"][:1, :5], alone["logits"], atol=1e-5, rtol=1e-4)
    labels = torch.randint(0, LABELS, (1, 9))
    loss_alone = mister_e_loss(alone, labels[:, :5], torch.ones(1, 5, dtype=torch.bool))
    torch.testing.assert_close(mister_e_loss(padded, labels, mask), loss_alone)


def test_context_reaches_every_utterance_and_each_expert_hears_its_stream():
    model = _model()
    speech, text = _conversation(6)
    mask = torch.ones(1, 6, dtype=torch.bool)
    base = model(speech, text, mask)["experts"]
    # The first utterance's speech changes the last utterance's speech and cross experts (the
    # context path), not its text expert (which hears only text).
    other = speech.clone()
    other[0, 0] = -other[0, 0]
    moved = model(other, text, mask)["experts"]
    delta = (moved[0, -1] - base[0, -1]).abs().amax(dim=-1)
    assert delta[EXPERTS.index("speech")] > 1e-4 and delta[EXPERTS.index("cross")] > 1e-4
    assert delta[EXPERTS.index("text")] == 0
    other = text.clone()
    other[0, 0] = -other[0, 0]
    delta = (model(speech, other, mask)["experts"][0, -1] - base[0, -1]).abs().amax(dim=-1)
    assert delta[EXPERTS.index("text")] > 1e-4 and delta[EXPERTS.index("speech")] == 0


def test_the_gate_mixes_the_experts_logits_per_utterance():
    model = _model()
    out = model(*_conversation(4), torch.ones(1, 4, dtype=torch.bool))
    torch.testing.assert_close(out["gate"].sum(-1), torch.ones(1, 4))
    mixed = (out["gate"].unsqueeze(-1) * out["experts"]).sum(dim=2)
    torch.testing.assert_close(out["logits"], mixed)
    assert len({tuple(g.round(decimals=4).tolist()) for g in out["gate"][0]}) > 1  # per utterance


def test_a_few_steps_learn_labels_that_only_context_tells_apart(tmp_path):
    """Every utterance has the same speech and text; its label is the label of the utterance
    before it (the first's: 0). Without context no model could do better than one label."""
    torch.manual_seed(0)
    model = _model(seed=3).train()
    g = torch.Generator().manual_seed(4)
    conversations, length = 16, 8
    cue = torch.randint(1, LABELS, (conversations, length), generator=g)
    labels = torch.cat([torch.zeros(conversations, 1, dtype=torch.long), cue[:, :-1]], dim=1)
    # The cue is a loud marker in the speech of the *previous* utterance; each utterance's own
    # features carry nothing about its own label.
    speech = torch.zeros(conversations, length, SPEECH)
    speech[torch.arange(conversations)[:, None], torch.arange(length), cue] = 3.0
    text = torch.zeros(conversations, length, TEXT)
    mask = torch.ones(conversations, length, dtype=torch.bool)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(60):
        loss = mister_e_loss(model(speech, text, mask), labels, mask)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        predicted = model(speech, text, mask)["logits"].argmax(-1)
    assert (predicted == labels).float().mean() > 0.9
    model.save(tmp_path)
    again = MisterE.load(tmp_path)
    with torch.no_grad():
        torch.testing.assert_close(again(speech, text, mask)["logits"].argmax(-1), predicted)


@pytest.mark.parametrize("length", [1, 3])
def test_short_conversations_run(length):
    out = _model()(*_conversation(length), torch.ones(1, length, dtype=torch.bool))
    assert out["logits"].shape == (1, length, LABELS)
    assert torch.isfinite(out["logits"]).all()
