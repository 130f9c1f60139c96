"""The training recipe's parts that are pure functions of their inputs:
learning-rate and patch schedules, losses, the weight EMA, and the
initialisations that make the prior matter.

Why these exist (issue 11, measured on the first shipped model): the FiLM
modulation x * ln1(p) + ln2(p) of the 1/8-resolution level started with
small random-sign scales and shut, leaving that level dead; the prior z was
unbounded while the reverse process clamps to [-1, 1]; and every run
restarted a cosine schedule at its peak with a fresh Adam.
"""
from __future__ import annotations

import math
from typing import Iterable

import torch
import torch.nn.functional as F
from torch import nn

LR_MIN = 1e-6


# --- schedules (pure functions of the iteration: nothing to checkpoint) ------

def lr_at(i: int, lr0: float, warmup: int, total: int, lr_min: float = LR_MIN) -> float:
    """Linear warm-up over `warmup` iterations, then cosine from lr0 down to
    lr_min at iteration `total` (and lr_min after it). One schedule spans
    every session of a run: a session continues it, never restarts it."""
    if i < warmup:
        return lr0 * (i + 1) / warmup
    progress = min((i - warmup) / max(total - warmup, 1), 1.0)
    return lr_min + (lr0 - lr_min) * 0.5 * (1 + math.cos(math.pi * progress))


def patch_at(progress: float, patches: list[int], fractions: list[float] | None = None) -> int:
    """Progressive patch size: patches[j] for the j-th share of the run
    (equal shares unless fractions are given)."""
    fr = fractions or [1.0 / len(patches)] * len(patches)
    edge = 0.0
    for p, f in zip(patches, fr):
        edge += f
        if progress < edge - 1e-12:
            return p
    return patches[-1]


# --- losses ------------------------------------------------------------------

LOSSES = ("l1", "charbonnier", "psnr")


def image_loss(out: torch.Tensor, sharp: torch.Tensor, kind: str) -> torch.Tensor:
    """l1; charbonnier (sqrt(d^2 + 1e-6), L1 that is smooth at 0); psnr
    (minus the per-image PSNR in dB, mean over the batch: each image's
    error counts relative to its own, so flat crops do not dominate)."""
    out = out.float()
    if kind == "l1":
        return F.l1_loss(out, sharp)
    if kind == "charbonnier":
        return torch.sqrt((out - sharp) ** 2 + 1e-6).mean()
    if kind == "psnr":
        mse = ((out - sharp) ** 2).flatten(1).mean(1)
        return (10 * torch.log10(mse + 1e-8)).mean()
    raise ValueError(f"loss {kind!r}: expected one of {', '.join(LOSSES)}")


def fft_loss(out: torch.Tensor, sharp: torch.Tensor) -> torch.Tensor:
    """L1 between the 2-D spectra (real and imaginary parts), the frequency
    term of MIMO-UNet and later deblurring recipes: it weighs the high
    frequencies blur removes more than a pixel loss does."""
    a = torch.view_as_real(torch.fft.rfft2(out.float(), norm="ortho"))
    b = torch.view_as_real(torch.fft.rfft2(sharp.float(), norm="ortho"))
    return F.l1_loss(a, b)


# --- EMA of the weights --------------------------------------------------------

class EMA:
    """Exponential moving average of a list of parameters, the weights that
    ship. The decay ramps up from 0 ((1 + n) / (10 + n), capped) so a young
    run's average is not dominated by its random start."""

    def __init__(self, params: Iterable[nn.Parameter], decay: float) -> None:
        self.params = list(params)
        self.decay = decay
        self.shadow = [p.detach().clone().float() for p in self.params]
        self.updates = 0

    @torch.no_grad()
    def update(self) -> None:
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for s, p in zip(self.shadow, self.params):
            s.mul_(d).add_(p.detach().float(), alpha=1 - d)
        self.updates += 1

    @torch.no_grad()
    def swap(self) -> None:
        """Exchanges the live weights and the average (call twice to undo)."""
        for s, p in zip(self.shadow, self.params):
            tmp = p.detach().clone()
            p.copy_(s)
            s.copy_(tmp)

    def state_dict(self) -> dict[str, object]:
        return {"decay": self.decay, "updates": self.updates, "shadow": [s.cpu() for s in self.shadow]}

    def load_state_dict(self, st: dict[str, object]) -> None:
        shadow = st["shadow"]
        assert isinstance(shadow, list) and len(shadow) == len(self.shadow), "EMA: parameter count differs"
        for s, v in zip(self.shadow, shadow):
            s.copy_(v)
        self.updates = int(st["updates"])  # type: ignore[arg-type]


# --- initialisation that lets the prior in -----------------------------------

def film_layers(transformer: nn.Module) -> list[tuple[nn.Linear, nn.Linear]]:
    """(ln1, ln2) of every block that modulates by the prior (the
    1-token level: attention and feed-forward of each latent block)."""
    return [(m.ln1, m.ln2) for m in transformer.modules()
            if isinstance(getattr(m, "ln1", None), nn.Linear) and isinstance(getattr(m, "ln2", None), nn.Linear)]


@torch.no_grad()
def film_identity(transformer: nn.Module) -> int:
    """x * ln1(p) + ln2(p) starts as x * 1 + 0 for every p: weights 0, ln1's
    bias 1. The level then works as a plain Restormer level from the first
    step, and the gradient into the weights (dL/dk * p) is not zero, so the
    modulation learns to use the prior instead of shutting. Returns the
    number of modulations set."""
    pairs = film_layers(transformer)
    for ln1, ln2 in pairs:
        ln1.weight.zero_()
        ln1.bias.fill_(1.0)
        ln2.weight.zero_()
        ln2.bias.zero_()
    return len(pairs)


@torch.no_grad()
def zero_him_projections(transformer: nn.Module) -> int:
    """HIM adds proj(cross-attention to the prior) to the features; a zero
    proj starts every HIM as the identity (the residual path carries the
    image) while its gradient, attention output times upstream error, is
    not zero. Returns the number of HIMs."""
    n = 0
    for m in transformer.modules():
        him = getattr(m, "him", None)
        if him is not None:
            him.proj.weight.zero_()
            him.proj.bias.zero_()
            n += 1
    return n


@torch.no_grad()
def revive_latent_level(transformer: nn.Module, seed: int) -> int:
    """For weights trained before film_identity: re-initialise the
    1/8-resolution level (every block: fresh default init), then FiLM as
    identity and each block's two output projections zero. The level then
    adds exactly nothing at first (so the rest of the trained network is
    undisturbed) and its gradients are alive. Returns the blocks revived."""
    level = transformer.latent
    g = torch.get_rng_state()
    torch.manual_seed(seed)
    for mod in level.modules():
        if mod is not level and hasattr(mod, "reset_parameters"):
            mod.reset_parameters()
    torch.set_rng_state(g)
    film_identity(level)
    for blk in level.blocks:
        blk.attn.project_out.weight.zero_()
        blk.ffn.project_out.weight.zero_()
    return len(level.blocks)
