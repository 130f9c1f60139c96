"""Shape-agnostic building blocks that export to ONNX with dynamic H and W.

PyTorch's own pixel (un)shuffle and adaptive pooling symbolics bake the traced
sizes into the graph; these versions compute every size from the input's shape
so one exported graph serves any (padded) frame or tile size.
"""
from __future__ import annotations

import torch
from torch import nn


def pixel_unshuffle(x: torch.Tensor, r: int) -> torch.Tensor:
    """Same element order as torch.nn.PixelUnshuffle: out channel c*r*r + i*r + j."""
    b, c, h, w = x.shape
    x = x.reshape(b, c, h // r, r, w // r, r)
    x = x.permute(0, 1, 3, 5, 2, 4)
    return x.reshape(b, c * r * r, h // r, w // r)


def pixel_shuffle(x: torch.Tensor, r: int) -> torch.Tensor:
    """Same element order as torch.nn.PixelShuffle."""
    b, c, h, w = x.shape
    x = x.reshape(b, c // (r * r), r, r, h, w)
    x = x.permute(0, 1, 4, 2, 5, 3)
    return x.reshape(b, c // (r * r), h * r, w * r)


class PixelUnshuffle(nn.Module):
    def __init__(self, r: int) -> None:
        super().__init__()
        self.r = r

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return pixel_unshuffle(x, self.r)


class PixelShuffle(nn.Module):
    def __init__(self, r: int) -> None:
        super().__init__()
        self.r = r

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return pixel_shuffle(x, self.r)


def _pool_matrix(n: torch.Tensor | int, bins: int, like: torch.Tensor) -> torch.Tensor:
    """[bins, n] matrix whose row i averages input positions
    floor(i*n/bins) .. ceil((i+1)*n/bins)-1, exactly the bins of
    torch.nn.AdaptiveAvgPool*d for any n (not only multiples of bins)."""
    pos = torch.arange(n, device=like.device).unsqueeze(0)  # [1, n]
    i = torch.arange(bins, device=like.device).unsqueeze(1)  # [bins, 1]
    start = torch.div(i * n, bins, rounding_mode="floor")
    end = torch.div((i + 1) * n + bins - 1, bins, rounding_mode="floor")
    inside = (pos >= start) & (pos < end)
    m = inside.to(like.dtype)
    return m / m.sum(dim=1, keepdim=True)


class AdaptiveAvgPool2d(nn.Module):
    """nn.AdaptiveAvgPool2d((g, g)) as two matrix products, so the ONNX graph
    keeps H and W dynamic and still equals PyTorch's bins for any size."""

    def __init__(self, output_size: tuple[int, int]) -> None:
        super().__init__()
        self.output_size = output_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2], x.shape[-1]
        ph = _pool_matrix(h, self.output_size[0], x)  # [gh, H]
        pw = _pool_matrix(w, self.output_size[1], x)  # [gw, W]
        return torch.matmul(torch.matmul(ph, x), pw.transpose(0, 1))


class Transpose12(nn.Module):
    """einops Rearrange('b n c -> b c n') without einops: parameter-free, so
    the official Sequential indices (and state_dict keys) are kept."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.transpose(1, 2)
