"""CSP blocks of the anchor-free line (YOLOv8, YOLO11, YOLO12), with the ``ultralytics`` package's
attribute names so its checkpoints load by name.

``C2f`` splits ``cv1``'s output in two halves and keeps every bottleneck's output for the final
``cv2``; ``C3k2`` is ``C2f`` whose inner blocks are YOLOv5-style ``C3k`` blocks or plain bottlenecks;
``C2`` is the two-convolution CSP block of YOLOv8-p6's head. They differ from YOLOv5's ``C3`` only in
how the halves are split and re-joined.
"""

from __future__ import annotations

import torch
from torch import nn

from yolotr.nn.blocks import C3, BottleneckCSP
from yolotr.nn.conv import Conv


class KBottleneck(nn.Module):
    """Two ``Conv`` with kernels ``k = (k1, k2)`` and an optional residual: ``(B, c1, H, W) -> (B, c2, H, W)``.

    YOLOv5's ``Bottleneck`` is the case ``k = (1, 3)``; the anchor-free blocks use ``(3, 3)``.
    Keys: ``cv1``, ``cv2`` (as the package's ``Bottleneck``).
    """

    def __init__(self, c1: int, c2: int, shortcut: bool = True, g: int = 1, k=(3, 3), e: float = 0.5):
        super().__init__()
        c_ = int(c2 * e)
        self.cv1 = Conv(c1, c_, k[0], 1)
        self.cv2 = Conv(c_, c2, k[1], 1, g=g)
        self.add = shortcut and c1 == c2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.cv2(self.cv1(x))
        return x + y if self.add else y


class C1(nn.Module):
    """``cv1`` (1x1), then ``n`` 3x3 ``Conv`` layers with a residual: ``(B, c1, H, W) -> (B, c2, H, W)``."""

    def __init__(self, c1: int, c2: int, n: int = 1):
        super().__init__()
        self.cv1 = Conv(c1, c2, 1, 1)
        self.m = nn.Sequential(*(Conv(c2, c2, 3) for _ in range(n)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.cv1(x)
        return self.m(y) + y


class KBottleneckCSP(BottleneckCSP):
    """The package's ``BottleneckCSP``: YOLOv5's, with 3x3-3x3 inner bottlenecks (YOLOv5's are 1x1-3x3):
    ``(B, c1, H, W) -> (B, c2, H, W)``. A ``BottleneckCSP`` row of a YAML in the package's grammar (no
    ``anchors``) builds this one."""

    def __init__(self, c1: int, c2: int, n: int = 1, shortcut: bool = True, g: int = 1, e: float = 0.5):
        super().__init__(c1, c2, n, shortcut, g, e)
        c_ = int(c2 * e)
        self.m = nn.Sequential(*(KBottleneck(c_, c_, shortcut, g, k=(3, 3), e=1.0) for _ in range(n)))


class C2(nn.Module):
    """CSP block with 2 convolutions: ``cv2(cat(m(a), b))`` with ``a, b`` the halves of ``cv1(x)``.

    ``(B, c1, H, W) -> (B, c2, H, W)``.
    """

    def __init__(self, c1: int, c2: int, n: int = 1, shortcut: bool = True, g: int = 1, e: float = 0.5):
        super().__init__()
        self.c = int(c2 * e)
        self.cv1 = Conv(c1, 2 * self.c, 1, 1)
        self.cv2 = Conv(2 * self.c, c2, 1)
        self.m = nn.Sequential(*(KBottleneck(self.c, self.c, shortcut, g, k=(3, 3), e=1.0) for _ in range(n)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.cv1(x).chunk(2, 1)
        return self.cv2(torch.cat((self.m(a), b), 1))


class C2f(nn.Module):
    """YOLOv8's CSP block: ``cv1`` -> halves ``(y0, y1)``, ``y_{i+1} = m_i(y_i)``, ``cv2(cat(y0..y_{n+1}))``.

    ``(B, c1, H, W) -> (B, c2, H, W)``; hidden width ``c = int(c2 * e)``.
    """

    def __init__(self, c1: int, c2: int, n: int = 1, shortcut: bool = False, g: int = 1, e: float = 0.5):
        super().__init__()
        self.c = int(c2 * e)
        self.cv1 = Conv(c1, 2 * self.c, 1, 1)
        self.cv2 = Conv((2 + n) * self.c, c2, 1)
        self.m = nn.ModuleList(KBottleneck(self.c, self.c, shortcut, g, k=(3, 3), e=1.0) for _ in range(n))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = list(self.cv1(x).chunk(2, 1))
        for m in self.m:
            y.append(m(y[-1]))
        return self.cv2(torch.cat(y, 1))


class C3k(C3):
    """YOLOv5's ``C3`` with ``k x k`` bottlenecks (both convolutions): ``(B, c1, H, W) -> (B, c2, H, W)``."""

    def __init__(self, c1: int, c2: int, n: int = 1, shortcut: bool = True, g: int = 1, e: float = 0.5, k: int = 3):
        super().__init__(c1, c2, n, shortcut, g, e)
        c_ = int(c2 * e)
        self.m = nn.Sequential(*(KBottleneck(c_, c_, shortcut, g, k=(k, k), e=1.0) for _ in range(n)))


class C3x(C3):
    """YOLOv5's ``C3`` with cross-kernel bottlenecks (1x3 then 3x1): ``(B, c1, H, W) -> (B, c2, H, W)``."""

    def __init__(self, c1: int, c2: int, n: int = 1, shortcut: bool = True, g: int = 1, e: float = 0.5):
        super().__init__(c1, c2, n, shortcut, g, e)
        self.c_ = int(c2 * e)
        self.m = nn.Sequential(
            *(KBottleneck(self.c_, self.c_, shortcut, g, k=((1, 3), (3, 1)), e=1.0) for _ in range(n))
        )


class C3k2(C2f):
    """YOLO11's CSP block: ``C2f`` whose inner blocks are ``C3k`` (``c3k=True``) or 3x3 bottlenecks.

    ``(B, c1, H, W) -> (B, c2, H, W)``. The package's builder forces ``c3k=True`` at scales m/l/x
    (see :data:`yolotr.nn.registry` for that rule). ``attn=True`` appends a ``PSABlock`` to each inner
    bottleneck (the package's YOLO26 form).
    """

    def __init__(
        self,
        c1: int,
        c2: int,
        n: int = 1,
        c3k: bool = False,
        e: float = 0.5,
        attn: bool = False,
        g: int = 1,
        shortcut: bool = True,
    ):
        super().__init__(c1, c2, n, shortcut, g, e)
        from yolotr.nn.psa import PSABlock

        def inner() -> nn.Module:
            if attn:
                return nn.Sequential(
                    KBottleneck(self.c, self.c, shortcut, g),
                    PSABlock(self.c, attn_ratio=0.5, num_heads=max(self.c // 64, 1)),
                )
            if c3k:
                return C3k(self.c, self.c, 2, shortcut, g)
            return KBottleneck(self.c, self.c, shortcut, g)

        self.m = nn.ModuleList(inner() for _ in range(n))
