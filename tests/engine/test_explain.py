"""``yolotr explain``: attention maps recomputed faithfully from hooks, Grad-CAM, the CLI."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from tests.conftest import shared_path
from yolotr.cli import main
from yolotr.engine.explain import (
    attention_modules,
    capture_attention,
    explain,
    received_attention,
    top_detection_logit,
)
from yolotr.errors import ConfigError
from yolotr.models.detection import DetectionModel
from yolotr.nn.psa import AreaAttention, PSAAttention
from yolotr.nn.swin import SwinV2Layer, window_partition

IMGSZ = 128


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One intra-op thread: these forwards are tiny, and on a busy 2-core machine two threads spin-wait
    on each other (1.7 s instead of 15 ms per 128 px forward)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def calibrated(cfg: str) -> DetectionModel:
    """A seeded tiny model whose BatchNorm statistics come from one batch (at init they shrink every
    activation towards 0, which makes attention uniform and Grad-CAM flat)."""
    torch.manual_seed(0)
    model = DetectionModel(cfg, nc=3)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = 1.0
    model.train()
    with torch.no_grad():
        model(torch.rand(2, 3, IMGSZ, IMGSZ))
    return model.eval()


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> str:
    """A 150 x 230 synthetic image (letterboxed with padding at 128)."""
    rng = np.random.default_rng(0)
    im = np.full((150, 230, 3), 90, np.uint8)
    cv2.rectangle(im, (20, 30), (90, 120), (220, 40, 40), -1)
    cv2.circle(im, (170, 70), 35, (40, 200, 60), -1)
    im = np.clip(im + rng.integers(0, 30, im.shape), 0, 255).astype(np.uint8)
    path = tmp_path_factory.mktemp("explain") / "synthetic.png"
    cv2.imwrite(str(path), im[..., ::-1])
    return str(path)


@pytest.fixture(scope="module")
def c3tr():
    return calibrated("yolov5n-c3tr.yaml")


def check_heatmap(heat: np.ndarray, shape: tuple[int, int]) -> None:
    assert heat.shape == shape and heat.dtype == np.float32
    assert np.isfinite(heat).all() and heat.min() >= 0.0 and heat.max() <= 1.0
    assert heat.std() > 1e-3, "the map is constant"


def check_faithful(capture) -> None:
    """Rows are distributions, and ``probs @ v`` through the output projection is the module's output."""
    sums = capture.probs.sum(-1)
    torch.testing.assert_close(sums, torch.ones_like(sums), atol=1e-5, rtol=0)
    torch.testing.assert_close(capture.reconstruct(), capture.output, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize(
    ("cfg", "layer"),
    [
        ("c3tr", 8),
        ("yolov5n-swinv2.yaml", 6),
        ("yolov5n-transformerc3.yaml", 8),
        ("yolo11n.yaml", 10),  # C2PSA: PSABlock's PSAAttention
        ("yolo12n.yaml", 6),  # A2C2f: ABlock's AreaAttention, 4 areas
        ("yolo12n.yaml", 8),  # A2C2f, 1 area
    ],
)
def test_attention_map_is_faithful(cfg, layer, image, c3tr, tmp_path):
    model = c3tr if cfg == "c3tr" else calibrated(cfg)
    modules = attention_modules(model.model[layer])
    assert modules, f"no attention in layer {layer}"
    if cfg.startswith("yolo1"):
        assert isinstance(modules[-1], PSAAttention if cfg == "yolo11n.yaml" else AreaAttention)
    x = torch.rand(1, 3, IMGSZ, 96)
    check_faithful(capture_attention(model, x, modules[-1]))

    heat, path = explain(model, image, layer, imgsz=IMGSZ, save_path=tmp_path / "map.png")
    check_heatmap(heat, (150, 230))
    assert path.is_file() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_swin_shifted_padded_windows_go_back_in_place():
    """A shifted layer on a 6 x 7 map (padded to 8 x 8, 4 windows): the recomputed attention
    reproduces the output, and the per-position map equals a token-by-token computation."""
    torch.manual_seed(0)
    layer = SwinV2Layer(16, 2, window=4, shift=2).eval()
    h, w, ws, s = 6, 7, 4, 2
    capture = capture_attention(layer, torch.randn(1, h, w, 16), layer.attn)
    check_faithful(capture)
    assert capture.mask is not None

    got = received_attention(capture, h, w, swin=layer)
    hp, wp = 8, 8
    probs = capture.probs[0].mean(1)  # (nW, N, N)
    # window and in-window index of every rolled padded position, and where it sits in the original map
    index = torch.arange(hp * wp, dtype=torch.float32).view(1, hp, wp, 1)
    where = window_partition(index, ws)[0, :, :, 0].long()  # (nW, N): rolled flat position
    want = torch.zeros(h, w)
    for wi in range(where.shape[0]):
        for kj in range(ws * ws):
            rk, ck = divmod(int(where[wi, kj]), wp)
            ok, ok_c = (rk + s) % hp, (ck + s) % wp
            if ok >= h or ok_c >= w:
                continue
            total, count = 0.0, 0
            for qi in range(ws * ws):
                rq, cq = divmod(int(where[wi, qi]), wp)
                if (rq + s) % hp >= h or (cq + s) % wp >= w or capture.mask[wi, qi, kj] != 0:
                    continue
                total, count = total + float(probs[wi, qi, kj]), count + 1
            want[ok, ok_c] = total / max(count, 1)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)


def test_grad_cam_on_conv_layer(c3tr, tmp_path):
    image = str(shared_path("images", "bus.jpg"))
    assert not attention_modules(c3tr.model[4])
    heat, path = explain(c3tr, image, 4, imgsz=IMGSZ, save_path=tmp_path / "cam.png")
    check_heatmap(heat, (1080, 810))
    assert path.is_file()


def test_layer_out_of_range(c3tr, image):
    for layer in (-1, len(c3tr.model) - 1, 99):
        with pytest.raises(ConfigError, match="out of range"):
            explain(c3tr, image, layer, imgsz=IMGSZ)


def test_cli_writes_png(image, tmp_path, capsys):
    out = tmp_path / "cli.png"
    assert main(["explain", "--model", "yolov5n-c3tr.yaml", "--source", image, "--layer", "8", "--imgsz", "64",
                 "--out", str(out)]) == 0  # fmt: skip
    assert out.is_file() and out.read_bytes()[:4] == b"\x89PNG"
    assert str(out) in capsys.readouterr().out
    assert main(["explain", "--model", "yolov5n-c3tr.yaml", "--source", image, "--layer", "40"]) == 2
    assert "out of range" in capsys.readouterr().err


def test_area_attention_map_stays_within_its_stripes():
    """Area attention on a 6 x 8 map with 4 areas (12 tokens each: one and a half rows): the recomputed
    attention reproduces the output, every area's map sums to 1, and the map equals dense attention over
    all 48 tokens with keys outside the query's area masked out."""
    torch.manual_seed(0)
    attn = AreaAttention(64, num_heads=2, area=4).eval()
    h, w = 6, 8
    x = torch.randn(1, 64, h, w)
    capture = capture_attention(attn, x, attn)
    check_faithful(capture)
    got = received_attention(capture, h, w)
    torch.testing.assert_close(got.view(4, 12).sum(1), torch.ones(4), atol=1e-5, rtol=0)

    with torch.no_grad():  # dense reference: tokens row-major, per token [head0 q k v, head1 q k v]
        qkv = attn.qkv(x).flatten(2).transpose(1, 2).view(h * w, 2, 3, 32)  # (L, heads, qkv, d)
        q, k = qkv[:, :, 0].transpose(0, 1), qkv[:, :, 1].transpose(0, 1)  # (heads, L, d)
        area_of = torch.arange(h * w) // 12
        logits = q @ k.transpose(-2, -1) / 32**0.5
        logits = logits.masked_fill(area_of[:, None] != area_of[None, :], float("-inf"))
        probs = logits.softmax(-1).mean(0)  # (L, L), heads averaged
        want = torch.stack([probs[area_of == area_of[j], j].mean() for j in range(h * w)]).view(h, w)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)


def test_anchor_free_grad_cam_ranks_by_class_logit(tmp_path):
    """YOLOv8's head has no objectness: the Grad-CAM score is the logit of the highest class score,
    found from the raw maps or from the decoded output alone, and a conv layer gets a non-flat map."""
    model = calibrated("yolov8n.yaml")
    with torch.no_grad():
        out = model(torch.rand(1, 3, IMGSZ, 96))
    decoded, raw = out  # (1, A, 4 + nc), [(1, 16 * 4 + nc, H, W)]
    score = top_detection_logit(out)
    class_logits = torch.cat([r[0, 4 * 16 :].flatten(1) for r in raw], 1)  # (nc, A)
    assert score == class_logits.max()  # the raw logit: a saturated sigmoid (1.0) still ranks
    torch.testing.assert_close(score.sigmoid(), decoded[0, :, 4:].max(), atol=1e-6, rtol=1e-5)
    from_decoded = top_detection_logit(decoded, model.model[-1])  # no raw maps: logit of the best score
    torch.testing.assert_close(from_decoded.sigmoid(), decoded[0, :, 4:].max(), atol=1e-6, rtol=1e-5)

    image = str(shared_path("images", "bus.jpg"))
    assert not attention_modules(model.model[4])
    heat, path = explain(model, image, 4, imgsz=IMGSZ, save_path=tmp_path / "cam_af.png")
    check_heatmap(heat, (1080, 810))
    assert path.is_file()


def test_outputs_numbered_like_runs(image, tmp_path, capsys):
    """Without --out each call writes into a new run folder (exp, exp2, ...) and keeps the earlier map."""
    args = ["explain", "--model", "yolov5n-c3tr.yaml", "--source", image, "--layer", "8", "--imgsz", "64",
            "--project", str(tmp_path)]  # fmt: skip
    assert main(args) == 0
    first = tmp_path / "exp" / "synthetic_layer8.png"
    assert first.is_file()
    before = first.stat().st_mtime_ns
    assert main(args) == 0
    second = tmp_path / "exp2" / "synthetic_layer8.png"
    assert second.is_file() and str(second) in capsys.readouterr().out
    assert first.stat().st_mtime_ns == before
    assert main([*args, "--name", "mine"]) == 0
    assert (tmp_path / "mine" / "synthetic_layer8.png").is_file()


def test_the_overlay_never_replaces_the_image_or_an_existing_file_unasked(image, tmp_path, capsys):
    """Found by a user's probe: ``--out`` equal to the source photo replaced it with the overlay, and any existing
    file was replaced without a word."""
    source = tmp_path / "photo.jpg"
    source.write_bytes(open(image, "rb").read())
    photo = source.read_bytes()
    base = ["explain", "--model", "yolov5n-c3tr.yaml", "--source", str(source), "--layer", "8", "--imgsz", "64"]
    assert main([*base, "--out", str(source)]) == 2
    assert "the image being explained" in capsys.readouterr().err and source.read_bytes() == photo
    kept = tmp_path / "kept.png"
    kept.write_bytes(b"mine")
    assert main([*base, "--out", str(kept)]) == 2
    assert "exists; give another --out, or --exist-ok" in capsys.readouterr().err and kept.read_bytes() == b"mine"
    assert main([*base, "--out", str(kept), "--exist-ok"]) == 0 and kept.read_bytes()[:4] == b"\x89PNG"
    assert main([*base, "--out", str(tmp_path / "fresh")]) == 0  # no suffix: .png added, and reported
    assert str(tmp_path / "fresh.png") in capsys.readouterr().out and (tmp_path / "fresh.png").is_file()
    folder = tmp_path / "maps"
    assert main([*base, "--out", f"{folder}/"]) == 0  # a folder: the default name inside it
    assert (folder / "photo_layer8.png").is_file() and str(folder / "photo_layer8.png") in capsys.readouterr().out
    assert main([*base[:-1], "64,96", "--out", str(tmp_path / "wide.png")]) == 0  # h,w as the Python call takes
    assert main([*base, "--out", str(kept / "x.png")]) == 2  # a file where its folder would go
    assert "is a file, not a folder" in capsys.readouterr().err


def test_box_and_layer_are_checked(c3tr, image):
    """``--box`` is RT-DETR's head layer's: elsewhere it was ignored; a layer given as text or a bool ran as a
    number or failed in a TypeError."""
    with pytest.raises(ConfigError, match="--box 2: a detection rank .* drawn only on an RT-DETR model's head"):
        explain(c3tr, image, 8, imgsz=IMGSZ, box=2)
    with pytest.raises(ConfigError, match="--box -1"):
        explain(c3tr, image, 8, imgsz=IMGSZ, box=-1)
    for layer in ("8", 8.0, True):
        with pytest.raises(ConfigError, match="give a layer index"):
            explain(c3tr, image, layer, imgsz=IMGSZ)
