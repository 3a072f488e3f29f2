"""RT-DETR's modules: the package's YAMLs build exactly; HGNet blocks, RepConv fusion, the sin-cos embedding,
deformable attention against a plain bilinear reference at odd level sizes, the denoising queries."""

from __future__ import annotations

import json
import sys

import pytest
import torch

from yolotr.errors import ConfigError
from yolotr.models.detection import DetectionModel, load_model_yaml
from yolotr.nn.deform_attn import MSDeformAttn, deformable_sample
from yolotr.nn.denoising import denoising_group
from yolotr.nn.detr import AIFI, sincos_position_embedding
from yolotr.nn.head_detr import RTDETRDecoder
from yolotr.nn.hgnet import HGBlock, HGStem, RepC3, RepConv, ResNetLayer

from ..conftest import SHARED

NEXT = SHARED / "reference" / "ultralytics-next"
needs_next = pytest.mark.skipif(not NEXT.is_dir(), reason=f"shared reference {NEXT} not found (set YOLOTR_SHARED)")
RTDETR_NAMES = ["rtdetr-l", "rtdetr-x", "rtdetr-resnet50"]


@needs_next
@pytest.mark.parametrize("name", RTDETR_NAMES)
def test_shipped_rtdetr_yaml_builds_exactly(name: str) -> None:
    ref = json.loads((NEXT / "param_counts.json").read_text())["models"][name]
    model = DetectionModel(f"{name}.yaml")
    state = model.state_dict()
    keys = list(state)
    assert sum(p.numel() for p in model.parameters()) == ref["params"]
    assert len(state) == ref["state_dict_tensors"]
    assert len(model.model) == ref["layers"]
    assert model.stride.tolist() == ref["strides"]  # the package's [32]; the decoder reads strides 8, 16, 32
    assert [[k, list(state[k].shape)] for k in keys[:5]] == ref["first_keys"]
    assert [[k, list(state[k].shape)] for k in keys[-5:]] == ref["last_keys"]
    head = model.model[-1]
    assert type(head).__name__ == ref["head_class"] and head.end2end
    assert head.stride.tolist() == [8.0, 16.0, 32.0]
    for key in ("num_queries", "num_decoder_layers", "hidden_dim", "nhead", "nl", "num_denoising", "max_det"):
        assert getattr(head, key) == ref[key], key
    assert (head.label_noise_ratio, head.box_noise_scale) == (ref["label_noise_ratio"], ref["box_noise_scale"])
    assert head.decoder.eval_idx == ref["eval_idx"] and head.learnt_init_query == ref["learnt_init_query"]


def test_shipped_rtdetr_yamls_are_the_package_rows() -> None:
    if not NEXT.is_dir():
        pytest.skip(f"shared reference {NEXT} not found")
    import yaml

    for name in RTDETR_NAMES:
        ours = load_model_yaml(f"{name}.yaml")
        theirs = yaml.safe_load((NEXT / "yaml" / f"{name}.yaml").read_text())
        assert {k: ours[k] for k in theirs} == theirs


def _randomize_bn(module: torch.nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)


def test_hgnet_and_resnet_blocks_shapes() -> None:
    torch.manual_seed(0)
    x = torch.rand(2, 3, 37, 50)  # odd sides: the stem's pads keep ceil(H/4)
    assert HGStem(3, 16, 24)(x).shape == (2, 24, 10, 13)
    y = torch.rand(1, 24, 9, 11)
    assert HGBlock(24, 8, 32, 3, 2)(y).shape == (1, 32, 9, 11)
    block = HGBlock(24, 8, 24, 5, 3, lightconv=True, shortcut=True)
    assert block.add and block(y).shape == y.shape
    assert RepC3(24, 16, 2)(y).shape == (1, 16, 9, 11)
    assert ResNetLayer(3, 16, 1, True)(x).shape == (2, 16, 10, 13)
    assert ResNetLayer(16, 8, 2, False, 2)(torch.rand(1, 16, 10, 13)).shape == (1, 32, 5, 7)


@pytest.mark.parametrize("bn", [False, True])
def test_repconv_fuse_keeps_the_output(bn: bool) -> None:
    torch.manual_seed(0)
    rep = RepConv(8, 8, bn=bn).eval()
    _randomize_bn(rep)
    x = torch.rand(2, 8, 7, 9)
    with torch.no_grad():
        before = rep(x)
        rep.fuse()
        assert not hasattr(rep, "conv1") and rep.bn is None
        assert torch.allclose(rep(x), before, atol=1e-5)


def test_sincos_embedding_formula_and_aifi_shape() -> None:
    h, w, dim = 3, 5, 16
    emb = sincos_position_embedding(w, h, dim)[0]
    assert emb.shape == (h * w, dim) and emb.dtype == torch.float32
    omega = 1.0 / 10000.0 ** (torch.arange(dim // 4) / (dim // 4))
    y, x = 2, 3
    want = torch.cat(((y * omega).sin(), (y * omega).cos(), (x * omega).sin(), (x * omega).cos()))
    assert torch.allclose(emb[y * w + x], want, atol=1e-6)
    with pytest.raises(ValueError, match="divisible by 4"):
        sincos_position_embedding(2, 2, 6)
    assert AIFI(16, 32, 4)(torch.rand(2, 16, 3, 5)).shape == (2, 16, 3, 5)


def _bilinear_reference(value, shapes, locations, weights):
    """Deformable attention by explicit corner gathers (no grid_sample): ``align_corners=False`` pixel centres,
    zeros outside the map."""
    b, _, nh, dh = value.shape
    q, total = locations.shape[1], locations.shape[3]
    points = total // len(shapes)
    out = torch.zeros(b, q, nh, dh, dtype=value.dtype)
    start = 0
    for level, (h, w) in enumerate(shapes):
        v = value[:, start : start + h * w]  # (B, h*w, nh, dh)
        start += h * w
        loc = locations[:, :, :, level * points : (level + 1) * points]  # (B, Q, nh, P, 2)
        wt = weights[:, :, :, level * points : (level + 1) * points]
        px, py = loc[..., 0] * w - 0.5, loc[..., 1] * h - 0.5
        x0, y0 = px.floor(), py.floor()
        for dx in (0, 1):
            for dy in (0, 1):
                xi, yi = x0 + dx, y0 + dy
                corner = (1 - (px - xi).abs()) * (1 - (py - yi).abs())
                inside = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
                flat = (yi.clamp(0, h - 1) * w + xi.clamp(0, w - 1)).long()  # (B, Q, nh, P)
                for bi in range(b):
                    for hi in range(nh):
                        sampled = v[bi, flat[bi, :, hi], hi]  # (Q, P, dh)
                        scale = (corner * inside * wt)[bi, :, hi, :, None]
                        out[bi, :, hi] += (sampled * scale).sum(1)
    return out.reshape(b, q, nh * dh)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_deformable_attention_in_half_precision_on_the_cpu_samples_as_float32(dtype) -> None:
    """The CPU's fp16 / bf16 ``grid_sample`` gave NaN and garbage for the strided per-level views (every call at
    these sizes); the levels are made contiguous there. A whole rtdetr-l in bf16 on the CPU stays finite."""
    torch.manual_seed(0)
    shapes = [(40, 40), (20, 20), (10, 10)]
    value = torch.randn(1, sum(h * w for h, w in shapes), 8, 32)
    locations = torch.rand(1, 300, 8, 12, 2) * 1.6 - 0.3  # some outside the maps
    weights = torch.randn(1, 300, 8, 12).softmax(-1)
    want = deformable_sample(value, shapes, locations, weights)
    got = deformable_sample(value.to(dtype), shapes, locations.to(dtype), weights.to(dtype))
    assert torch.isfinite(got).all()
    # rounding the coordinates moves a sample by up to ~0.2 cell in bf16 on a 40-cell side (0.28 measured), 0.03 in fp16
    tolerance = 0.5 if dtype == torch.bfloat16 else 0.06
    assert (got.float() - want).abs().max() < tolerance


def test_rtdetr_in_bf16_on_the_cpu_gives_finite_detections_from_the_same_anchors() -> None:
    torch.manual_seed(1)
    model = DetectionModel("rtdetr-l.yaml", nc=80).eval().to(torch.bfloat16)
    with torch.no_grad():
        out = model(torch.rand(1, 3, 320, 320).to(torch.bfloat16))[0]
    assert torch.isfinite(out).all()
    head, shapes = model.model[-1], [(40, 40), (20, 20), (10, 10)]
    logits, valid = head.anchors(shapes, torch.zeros((), dtype=torch.bfloat16))
    logits32, valid32 = head.anchors(shapes, torch.zeros(()))
    assert torch.equal(valid, valid32) and valid32.all()  # bf16 rounding invalidated the 316 edge anchors
    assert logits.dtype == torch.bfloat16 and torch.allclose(logits.float(), logits32, rtol=1e-2)


def test_deformable_attention_equals_plain_reference_at_odd_sizes() -> None:
    torch.manual_seed(0)
    shapes = [(7, 11), (5, 3), (1, 2)]  # sides that are multiples of nothing in particular
    b, q, nh, dh, p = 2, 9, 4, 8, 3
    value = torch.randn(b, sum(h * w for h, w in shapes), nh, dh, dtype=torch.float64)
    locations = torch.rand(b, q, nh, len(shapes) * p, 2, dtype=torch.float64) * 1.4 - 0.2  # some outside
    weights = torch.rand(b, q, nh, len(shapes) * p, dtype=torch.float64).softmax(-1)
    got = deformable_sample(value, shapes, locations, weights)
    assert got.shape == (b, q, nh * dh)
    assert torch.allclose(got, _bilinear_reference(value, shapes, locations, weights), atol=1e-10)

    attn = MSDeformAttn(32, len(shapes), nh, p).double()
    torch.nn.init.normal_(attn.sampling_offsets.weight, std=0.1)
    torch.nn.init.normal_(attn.attention_weights.weight, std=0.1)
    query = torch.randn(b, q, 32, dtype=torch.float64)
    boxes = torch.rand(b, q, 4, dtype=torch.float64) * 0.5 + 0.25
    feats = torch.randn(b, value.shape[1], 32, dtype=torch.float64)
    locations, weights = attn.sampling(query, boxes, shapes)
    # with box references the offsets move within a box: the package's init puts point k of each head k half-sizes out
    projected = attn.value_proj(feats).view(b, -1, nh, 32 // nh)
    want = attn.output_proj(_bilinear_reference(projected, shapes, locations, weights))
    assert torch.allclose(attn(query, boxes, feats, shapes), want, atol=1e-10)
    with pytest.raises(ValueError, match="level shapes"):
        attn(query, boxes, feats[:, :-1], shapes)


def test_denoising_queries_layout_and_noise() -> None:
    torch.manual_seed(0)
    targets = torch.tensor(
        [[0, 1, 0.5, 0.5, 0.2, 0.2], [1, 2, 0.3, 0.3, 0.1, 0.2], [0, 0, 0.7, 0.4, 0.3, 0.1]], dtype=torch.float32
    )
    embed = torch.nn.Embedding(3, 8).weight
    dn_embed, dn_bbox, mask, meta = denoising_group(targets, 2, 3, 10, embed, 8, 0.0, 1.0)
    m, groups = 2, 8 // 2  # 2 boxes in image 0: 4 groups of 2 positives + 2 negatives
    assert meta["dn_num_group"] == groups and meta["dn_num_split"] == [16, 10]
    assert dn_embed.shape == (2, 16, 8) and dn_bbox.shape == (2, 16, 4) and mask.shape == (26, 26)
    assert mask[16:, :16].all() and not mask[16:, 16:].any() and not mask[:16, 16:].any()
    assert not mask[:4, :4].any() and mask[:4, 4:16].all()  # a group sees itself, not the others
    assert [p.tolist() for p in meta["dn_pos_idx"]] == [[0, 1, 4, 5, 8, 9, 12, 13], [0, 4, 8, 12]]
    assert [g.tolist() for g in meta["dn_gt_idx"]] == [[0, 1], [2]]  # image-ordered: image 0's two, then image 1's
    ordered = targets[torch.argsort(targets[:, 0], stable=True)]
    for image, (pos, gt) in enumerate(zip(meta["dn_pos_idx"], meta["dn_gt_idx"])):
        gt = gt.repeat(groups)
        assert torch.equal(dn_embed[image, pos], embed[ordered[gt, 1].long()])  # no label noise: true classes
        centre_shift = (dn_bbox[image, pos].sigmoid()[:, :2] - ordered[gt, 2:4]).abs()
        assert (centre_shift <= ordered[gt, 4:6] / 2 + 1e-6).all()  # positives move less than half a side
        negatives = pos + m  # a group's negatives follow its positives
        corners = dn_bbox[image, negatives].sigmoid()
        assert not torch.allclose(corners, dn_bbox[image, pos].sigmoid())
    assert not dn_embed[1, [1, 3]].any()  # image 1 has one box: its second slots are padding
    assert denoising_group(targets[:0], 2, 3, 10, embed, 8) is None


def test_decoder_contract_and_bad_input() -> None:
    torch.manual_seed(0)
    head = RTDETRDecoder(nc=3, ch=(16, 24), hd=32, nq=20, nh=4, ndl=2, d_ffn=64, nd=6)
    head.stride.copy_(torch.tensor([8.0, 16.0]))
    x = [torch.rand(2, 16, 8, 12), torch.rand(2, 24, 4, 6)]
    targets = torch.tensor([[0, 1, 0.5, 0.5, 0.2, 0.2], [1, 2, 0.3, 0.3, 0.1, 0.2]])
    head.train()
    boxes, logits, enc_boxes, enc_logits, meta = head(x, targets)
    # one box per image: 6 groups of one positive and one negative query
    assert boxes.shape == (2, 2, 12 + 20, 4) and logits.shape == (2, 2, 32, 3)
    assert enc_boxes.shape == (2, 20, 4) and enc_logits.shape == (2, 20, 3) and meta["dn_num_split"] == [12, 20]
    assert head(x)[4] is None  # no targets: no denoising
    head.eval()
    with torch.no_grad():
        det, raw = head(x)
    assert det.shape == (2, 20, 6) and raw[0].shape == (1, 2, 20, 4)
    assert (det[..., 4].diff(dim=1) <= 0).all() and (det[..., 2] >= det[..., 0]).all()
    assert (det[..., :4] >= -1e-3).all() and (det[..., [0, 2]] <= 96 + 1e-3).all()  # pixels of the 64x96 input
    head.set_end2end(True, max_det=5)
    assert head(x)[0].shape == (2, 5, 6)
    with pytest.raises(ConfigError, match="no branch for NMS"):
        head.set_end2end(False)
    with pytest.raises(ValueError, match="built for 2 feature levels, got 3"):
        head([*x, x[-1]])


def test_rtdetr_yaml_errors_name_the_row() -> None:
    cfg = load_model_yaml("rtdetr-resnet50.yaml")
    cfg["backbone"][1][3] = [32, 64, 1, False, 3]  # c1 does not match the stem's 64 channels
    with pytest.raises(ConfigError, match=r"layer 1 .*ResNetLayer's row is \[c1, c2, stride, is_first, n\]"):
        DetectionModel(cfg)
    cfg = load_model_yaml("rtdetr-l.yaml")
    cfg["head"][-1][3] = []
    with pytest.raises(ConfigError, match="RTDETRDecoder needs the number of classes"):
        DetectionModel(cfg)


def test_checkpoint_with_a_foreign_detr_class_is_refused(tmp_path, monkeypatch) -> None:
    """A pickled RT-DETR model using a class yolotr does not implement is refused before anything runs."""
    import types

    from yolotr.errors import CheckpointError
    from yolotr.models.loading import load_model

    name = "ultralytics.nn.modules.transformer"
    fake = types.ModuleType(name)
    encoder = type("DeformableTransformerEncoder", (), {"__module__": name})
    fake.DeformableTransformerEncoder = encoder
    for parent in ("ultralytics", "ultralytics.nn", "ultralytics.nn.modules"):
        monkeypatch.setitem(sys.modules, parent, types.ModuleType(parent))
    monkeypatch.setitem(sys.modules, name, fake)
    torch.save({"model": encoder(), "ema": None}, tmp_path / "foreign.pt")
    monkeypatch.undo()
    with pytest.raises(CheckpointError, match=r"module class 'DeformableTransformerEncoder' .*does not implement"):
        load_model(tmp_path / "foreign.pt")
