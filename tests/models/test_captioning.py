"""CaptioningModel: attention gradients, causality, padding in the loss, greedy vs beam, encoders, vocabulary."""

from __future__ import annotations

import pytest
import torch

from yolotr.errors import ConfigError
from yolotr.models.captioning import Attention, CaptioningModel, caption_loss, sine_positions_2d
from yolotr.models.vocab import Vocabulary, tokenize

PATCH = {"type": "patch", "patch": 16, "depth": 1}
TINY_DET = {  # yolov5n's first rows with a one-scale head: cheap to build
    "nc": 3,
    "depth_multiple": 0.33,
    "width_multiple": 0.25,
    "anchors": [[10, 13, 16, 30, 33, 23]],
    "backbone": [[-1, 1, "Conv", [64, 6, 2, 2]], [-1, 1, "Conv", [128, 3, 2]], [-1, 1, "C3", [128]]],
    "head": [[[2], 1, "Detect", ["nc", "anchors"]]],
}


def tiny(vocab_size: int = 12, encoder: dict | None = None, **kw) -> CaptioningModel:
    torch.manual_seed(0)
    kw = {"dim": 32, "layers": 2, "heads": 4, "max_len": 10, "dropout": 0.0, **kw}
    return CaptioningModel(vocab_size, encoder or PATCH, **kw).eval()


@pytest.mark.parametrize("causal,cross", [(True, False), (False, True)])
@pytest.mark.parametrize("weights", [False, True])
def test_attention_gradcheck_float64(causal, cross, weights):
    torch.manual_seed(0)
    attn = Attention(8, 2).double()
    x = torch.randn(2, 3, 8, dtype=torch.float64, requires_grad=True)
    ctx = torch.randn(2, 5, 8, dtype=torch.float64, requires_grad=True) if cross else None
    inputs = (x, ctx) if cross else (x,)

    def f(*args):
        out, w = attn(args[0], args[1] if cross else None, causal=causal, return_weights=weights)
        return (out, w) if weights else out

    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-5)


def test_attention_weights_match_sdpa_and_are_causal():
    torch.manual_seed(0)
    attn = Attention(16, 4).eval()
    x = torch.randn(2, 6, 16)
    fast, _ = attn(x, causal=True)
    slow, w = attn(x, causal=True, return_weights=True)
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=1e-5)
    assert torch.allclose(w.sum(-1), torch.ones(2, 6))
    assert (w.triu(1) == 0).all()


def test_decoder_is_causal_perturbing_the_future():
    model = tiny()
    memory = torch.randn(2, 16, 32)
    tokens = torch.randint(4, 12, (2, 8))
    logits, _ = model.decode(tokens, memory)
    for t in range(1, 8):
        changed = tokens.clone()
        changed[:, t:] = torch.randint(4, 12, (2, 8 - t))
        other, _ = model.decode(changed, memory)
        torch.testing.assert_close(other[:, :t], logits[:, :t])


def test_padding_never_contributes_to_the_loss():
    torch.manual_seed(0)
    logits = torch.randn(3, 6, 10, requires_grad=True)
    targets = torch.randint(4, 10, (3, 6))
    targets[0, 4:] = Vocabulary.PAD
    targets[2, 2:] = Vocabulary.PAD
    pad = targets == Vocabulary.PAD
    loss = caption_loss(logits, targets, label_smoothing=0.1)
    loss.backward()
    assert (logits.grad[pad] == 0).all() and (logits.grad[~pad] != 0).any()
    noisy = logits.detach() + pad[..., None] * torch.randn(3, 6, 10) * 100
    torch.testing.assert_close(caption_loss(noisy, targets, 0.1), loss.detach())
    kept = torch.stack([caption_loss(logits[i : i + 1, ~pad[i]], targets[i : i + 1, ~pad[i]], 0.1) for i in range(3)])
    counts = (~pad).sum(1).float()
    torch.testing.assert_close((kept * counts).sum() / counts.sum(), loss.detach())


@pytest.mark.parametrize("penalty", [1.0, 1.5])
def test_beam_width_1_equals_greedy(penalty):
    model = tiny(positions="learned")
    images = torch.rand(3, 3, 32, 32)
    greedy = model.greedy(images, repetition_penalty=penalty)
    beam, _ = model.beam_search(images, beam_size=1, repetition_penalty=penalty)
    assert torch.equal(greedy, beam)


def test_beam_search_batched_equals_one_image_at_a_time():
    model = tiny()
    images = torch.rand(2, 3, 32, 32)
    batched, scores = model.beam_search(images, beam_size=3, max_len=6)
    for i in range(2):
        alone, s = model.beam_search(images[i : i + 1], beam_size=3, max_len=6)
        n = alone.shape[1]
        assert torch.equal(batched[i, :n], alone[0]) and (batched[i, n:] == Vocabulary.PAD).all()
        torch.testing.assert_close(scores[i : i + 1], s)


def test_beam_search_stops_at_end_and_pads():
    """``<end>`` wins every step it may: after the one word a caption has (never ``<end>`` first)."""
    model = tiny()
    with torch.no_grad():
        model.bias.zero_()
        model.bias[Vocabulary.END] = 50.0
    ids, _ = model.beam_search(torch.rand(2, 3, 64, 64), beam_size=3)
    assert ids.shape == (2, 2) and (ids[:, 1] == Vocabulary.END).all()
    assert (ids[:, 0] >= len(Vocabulary.SPECIALS) - 1).all() and (ids[:, 0] != Vocabulary.END).all()
    greedy = model.greedy(torch.rand(2, 3, 64, 64))
    assert greedy.shape == (2, 2) and (greedy[:, 1] == Vocabulary.END).all()


def _scripted(model, monkeypatch, table: dict[int, dict[int, float]]) -> None:
    """``model.decode`` giving the next token's probabilities by the last token (``table[last]``)."""

    def decode(seqs, memory):
        logp = torch.full((seqs.shape[0], 1, 12), -30.0)
        for row, last in enumerate(seqs[:, -1].tolist()):
            for token, p in table.get(last, {Vocabulary.END: 1.0}).items():
                logp[row, 0, token] = torch.tensor(p).log()
        return logp, None

    monkeypatch.setattr(model, "decode", decode)


def test_beam_search_runs_until_every_beam_ends(monkeypatch):
    """Found by a user: a wider beam gave an empty caption. ``<end>`` first was allowed, and the search stopped
    once the top beam by summed log-probability had ended, which under length normalization a longer beam still
    beats: here "5 <end>" (-0.87 summed, -0.43 per token) leads when it ends, "6 7 8 <end>" (-1.23, -0.31)
    ends two steps later and is the better caption."""
    model = tiny()
    end = Vocabulary.END
    table = {Vocabulary.START: {5: 0.7, 6: 0.3}, 5: {end: 0.6, 9: 0.4}, 6: {7: 0.99, end: 0.01},
             7: {8: 0.99, end: 0.01}, 8: {end: 0.99, 5: 0.01}, 9: {end: 0.5, 10: 0.5}}  # fmt: skip
    _scripted(model, monkeypatch, table)
    ids, score = model.beam_search(torch.rand(1, 3, 32, 32), beam_size=2, max_len=8)
    assert ids[0].tolist() == [6, 7, 8, end]
    assert score[0] == pytest.approx(torch.tensor([0.3, 0.99, 0.99, 0.99]).log().sum().item() / 4, abs=1e-4)
    _scripted(model, monkeypatch, {Vocabulary.START: {end: 0.4, 5: 0.35, 6: 0.25}})  # <end> likeliest first
    for beam in (1, 3, 8):
        assert model.generate(torch.rand(1, 3, 32, 32), beam)[0].tolist() == [5, end]


def test_a_beam_wider_than_the_vocabulary_is_refused():
    model = tiny()  # 12 tokens: 8 words
    assert model.beam_search(torch.rand(1, 3, 32, 32), beam_size=8, max_len=4)[0].shape[0] == 1
    with pytest.raises(ConfigError, match="beam 9: wider than the 8 words of this model's vocabulary"):
        model.beam_search(torch.rand(1, 3, 32, 32), beam_size=9)


def test_backbone_encoder_frozen_and_rebuilt_from_config():
    enc = {"type": "backbone", "cfg": TINY_DET, "layer": 2, "freeze": True}
    model = tiny(encoder=enc).train()
    images = torch.rand(2, 3, 32, 32)
    memory, grid = model.encode(images)
    assert grid == (8, 8) and memory.shape == (2, 64, 32)
    bn = next(m for m in model.encoder.layers.modules() if isinstance(m, torch.nn.BatchNorm2d))
    before = bn.running_mean.clone()
    tokens = torch.randint(4, 12, (2, 5))
    caption_loss(model(images, tokens[:, :-1]), tokens[:, 1:]).backward()
    assert torch.equal(bn.running_mean, before) and all(p.grad is None for p in model.encoder.layers.parameters())
    assert model.embed.weight.grad is not None
    clone = CaptioningModel.from_config(model.config)
    assert clone.state_dict().keys() == model.state_dict().keys()
    with pytest.raises(ConfigError, match="out of range"):
        tiny(encoder={"type": "backbone", "cfg": TINY_DET, "layer": 3})


def test_backbone_encoder_from_detection_checkpoint(tmp_path):
    from yolotr.models.detection import DetectionModel
    from yolotr.models.weights import model_checkpoint, save_checkpoint

    det = DetectionModel(TINY_DET)
    with torch.no_grad():
        det.model[0].conv.weight.fill_(0.25)
    path = save_checkpoint(model_checkpoint(det), tmp_path / "det.pt")
    model = tiny(encoder={"type": "backbone", "layer": 2, "weights": str(path)})
    assert (model.encoder.layers[0].conv.weight == 0.25).all()
    assert model.config["encoder"]["cfg"]["nc"] == 3 and "weights" not in model.config["encoder"]


def test_gradient_checkpointing_same_gradients():
    a, b = tiny(grad_checkpointing=False).train(), tiny(grad_checkpointing=True).train()
    images, tokens = torch.rand(2, 3, 64, 64), torch.randint(4, 12, (2, 6))
    for m in (a, b):
        caption_loss(m(images, tokens[:, :-1]), tokens[:, 1:]).backward()
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(p.grad, q.grad, msg=name)


def test_attention_maps_shape():
    model = tiny()
    images = torch.rand(2, 3, 64, 64)
    ids = model.greedy(images, max_len=6)
    maps, grid = model.attention_maps(images, ids)
    assert grid == (4, 4) and maps.shape == (2, ids.shape[1], 4, 4)
    torch.testing.assert_close(maps.sum((-1, -2)), torch.ones(2, ids.shape[1]))


def test_sine_positions_2d_distinct():
    pos = sine_positions_2d(3, 4, 16)
    assert pos.shape == (12, 16) and torch.cdist(pos, pos).add(torch.eye(12)).min() > 0


def test_vocabulary_round_trip():
    vocab = Vocabulary.build(["A red circle.", "two red circles, a square", "a rare word"], min_count=2)
    assert vocab.itos[:4] == list(Vocabulary.SPECIALS) and set(vocab.itos[4:]) == {"a", "red"}
    ids = vocab.encode("A red square")
    assert ids == [Vocabulary.START, vocab.stoi["a"], vocab.stoi["red"], Vocabulary.UNK, Vocabulary.END]
    assert vocab.decode(ids + [Vocabulary.PAD]) == "a red <unk>"
    assert Vocabulary.from_dict(vocab.to_dict()).itos == vocab.itos
    assert len(vocab.encode("a a a a a a", max_len=4)) == 4
    assert tokenize("Two circles, a square.") == ["two", "circles", "a", "square"]


def test_beam_search_chooses_a_finished_caption_over_one_cut_at_max_len(monkeypatch):
    """A scripted decoder: the first word is 5 (p 0.7) or 6 (0.3); 5 is followed by 5 (0.99) for ever, 6 by <end>.
    At ``max_len`` the unfinished "5 5 5 5" outscores the finished "6 <end>", and was returned mid-sentence;
    a beam that ended is chosen when one did, and the unfinished one only when none did."""
    model = tiny()
    end = Vocabulary.END
    _scripted(model, monkeypatch, {Vocabulary.START: {5: 0.7, 6: 0.3}, 5: {5: 0.99, end: 0.005}, 6: {end: 1.0}})
    ids, score = model.beam_search(torch.rand(1, 3, 32, 32), beam_size=2, max_len=5)
    assert ids[0, :2].tolist() == [6, end] and score[0] == pytest.approx(torch.tensor(0.3).log().item() / 2, abs=1e-4)
    ids, _ = model.beam_search(torch.rand(1, 3, 32, 32), beam_size=1, max_len=5)  # no beam ends: the best cut one
    assert ids[0].tolist() == [5] * 4
