"""Image quality numbers, as BasicSR defines them and as the Go `quality`
package computes them (`hidiffd eval`): RGB, no border crop, values in
[0,1]. One definition for every Python caller (evaluate, ablate, training
validation), so numbers from different tools can be compared; the pytest
pins it on the values quality/quality_test.go pins the Go side on.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def quantise(x: torch.Tensor) -> torch.Tensor:
    """As the encoder writes it: round(clamp(x,0,1)*255)/255."""
    return (x.clamp(0, 1) * 255).round() / 255


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR (dB) of a against the reference b, both [N,3,H,W] (or [3,H,W])
    in [0,1]: per image 10*log10(1/MSE) over all its values (BasicSR's
    calculate_psnr on 0..255, the Go quality.PSNR), +inf for identical
    images; for a batch, the mean of the per-image values (BasicSR's
    average over a test set). Computed in float64, as the Go side is, and
    without clamping: a caller that scores raw model output quantises or
    clamps it first, as the encoder would."""
    if a.shape != b.shape:
        raise ValueError(f"psnr of shape {tuple(a.shape)} against {tuple(b.shape)}")
    if a.dim() == 3:
        a, b = a[None], b[None]
    mse = ((a.double() - b.double()) ** 2).flatten(1).mean(1)
    per = [math.inf if m == 0 else -10 * math.log10(m) for m in mse.tolist()]
    return sum(per) / len(per)


def ssim(a: torch.Tensor, b: torch.Tensor) -> float:
    """[1,3,H,W] in [0,1]; BasicSR calculate_ssim on 0..255 values (11x11
    Gaussian window, sigma 1.5, 'valid' region, averaged over channels)."""
    g = torch.exp(-((torch.arange(11, dtype=torch.float64) - 5) ** 2) / (2 * 1.5 ** 2))
    w = (g / g.sum())[:, None] @ (g / g.sum())[None, :]
    w = w.expand(3, 1, 11, 11)
    x, y = a.double() * 255, b.double() * 255
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    f = lambda t: F.conv2d(t, w, groups=3)  # noqa: E731
    mx, my = f(x), f(y)
    sxx, syy, sxy = f(x * x) - mx ** 2, f(y * y) - my ** 2, f(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx ** 2 + my ** 2 + c1) * (sxx + syy + c2))
    return float(s.mean())
