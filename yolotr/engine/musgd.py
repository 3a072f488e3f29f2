"""MuSGD: Muon's orthogonalised momentum updates mixed with SGD, as the ``ultralytics`` package trains YOLO26.

For a parameter group with ``use_muon`` (2-D and 4-D weights) every step adds two updates:

- Muon: the momentum ``m = lerp(m, g, 1 - beta)``, its Nesterov look-ahead ``lerp(g, m, beta)`` (4-D
  filters flattened to ``(out, in * kh * kw)``) orthogonalised by five Newton-Schulz iterations (in
  bfloat16, as the package runs them: the result is an approximate ``U V^T`` of the update's SVD), scaled
  by ``sqrt(max(1, rows / cols))`` of the weight's last two dimensions (as the package does: for a conv
  filter that is ``kh / kw``, so 1, not the flattened matrix's shape), applied with ``lr * muon``;
- SGD: PyTorch's SGD step (weight decay on the gradient, momentum, Nesterov) with ``lr * sgd``.

Other groups (biases, norm weights) take plain SGD with ``lr``. The update rule follows the package's
``MuSGD`` (8.4) and its defaults as its trainer sets them (``muon`` 0.2, ``sgd`` 1.0, Nesterov);
``momentum`` is the same ``beta`` for both parts, so the trainer's momentum warmup drives both. The state
(two momentum buffers per Muon parameter, one per SGD parameter) is a regular optimizer state: it saves
and resumes with ``state_dict``.
"""

from __future__ import annotations

import torch

# Newton-Schulz quintic coefficients (Keller Jordan's Muon), five iterations.
NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)
NS_STEPS = 5


def orthogonalize(update: torch.Tensor, steps: int = NS_STEPS, eps: float = 1e-7) -> torch.Tensor:
    """Approximate ``U V^T`` of a 2-D ``(rows, cols)`` tensor by Newton-Schulz iterations in bfloat16.

    Returns a bfloat16 tensor of the same shape (singular values pushed towards 1, roughly 0.7-1.2).
    """
    if update.ndim != 2:
        raise ValueError(f"orthogonalize: expected a 2-D tensor, got shape {tuple(update.shape)}")
    a, b, c = NS_COEFFICIENTS
    x = update.bfloat16()
    x = x / (x.norm() + eps)
    tall = update.shape[0] > update.shape[1]
    if tall:
        x = x.T
    for _ in range(steps):  # fused multiply-adds, as the package (baddbmm): fewer bfloat16 passes than a * x + ...
        gram = x @ x.T
        poly = torch.addmm(gram, gram, gram, beta=b, alpha=c)  # b * gram + c * gram @ gram
        x = torch.addmm(x, poly, x, beta=a)  # a * x + poly @ x
    return x.T if tall else x


class MuSGD(torch.optim.Optimizer):
    """Muon + SGD (see the module).

    Args:
        params: parameters or groups; a group with ``use_muon=True`` takes the mixed update (its parameters
            must be 2-D or more: 4-D conv filters are flattened per output channel).
        lr, momentum, weight_decay, nesterov: as ``torch.optim.SGD`` (per group).
        muon: gain of the orthogonalised update in Muon groups (the package's trainer: 0.2).
        sgd: gain of the SGD update in Muon groups (1.0).
    """

    def __init__(
        self,
        params,
        lr: float = 0.01,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        nesterov: bool = True,
        use_muon: bool = False,
        muon: float = 0.2,
        sgd: float = 1.0,
    ):
        if lr < 0 or momentum < 0 or weight_decay < 0:
            raise ValueError(f"MuSGD: lr, momentum and weight_decay must be >= 0, got {lr}, {momentum}, {weight_decay}")
        defaults = dict(lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov, use_muon=use_muon)
        super().__init__(params, defaults)
        self.muon, self.sgd = float(muon), float(sgd)
        for group in self.param_groups:
            if group["use_muon"]:
                flat = [tuple(p.shape) for p in group["params"] if p.ndim < 2]
                if flat:
                    raise ValueError(f"MuSGD: Muon groups take 2-D or 4-D weights, got shapes {flat}")

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, beta, wd, nesterov = group["lr"], group["momentum"], group["weight_decay"], group["nesterov"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                state = self.state[p]
                if group["use_muon"]:
                    if not state:
                        state["momentum_buffer"] = torch.zeros_like(p)
                        state["momentum_buffer_sgd"] = torch.zeros_like(p)
                    m = state["momentum_buffer"]
                    m.lerp_(grad, 1 - beta)
                    look = grad.lerp(m, beta) if nesterov else m
                    ortho = orthogonalize(look.reshape(len(look), -1))
                    ortho = ortho * max(1.0, grad.shape[-2] / grad.shape[-1]) ** 0.5  # the package's: last two dims
                    p.add_(ortho.reshape(p.shape).to(p.dtype), alpha=-lr * self.muon)
                    self._sgd(p, grad, state, "momentum_buffer_sgd", lr * self.sgd, beta, wd, nesterov)
                else:
                    self._sgd(p, grad, state, "momentum_buffer", lr, beta, wd, nesterov)
        return loss

    @staticmethod
    def _sgd(p, grad, state, key, lr, beta, wd, nesterov) -> None:
        """PyTorch's SGD step on ``p`` with the momentum buffer ``state[key]``."""
        if wd:
            grad = grad.add(p, alpha=wd)
        if key not in state:
            state[key] = torch.zeros_like(p)
        buf = state[key].mul_(beta).add_(grad)
        p.add_(grad.add(buf, alpha=beta) if nesterov else buf, alpha=-lr)
