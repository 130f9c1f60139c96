"""Latent encoders: LE (stage one: sharp + blurry in) and LE_DM (stage two:
blurry in), in the released GELU (GoPro) and LeakyReLU (RealBlur) variants.
Both end in 16 tokens x (4*embed_dim) channels."""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from .mixer import MLP
from .ops import AdaptiveAvgPool2d, PixelUnshuffle


def _tokens(x: torch.Tensor) -> torch.Tensor:
    """b c h w -> b (h w) c"""
    b, c = x.shape[0], x.shape[1]
    return x.reshape(b, c, -1).transpose(1, 2)


class _LatentEncoder(nn.Module):
    """The forward pass both released variants share; subclasses build the
    layers (the official attribute names, so checkpoints load strictly)."""

    pixel_unshuffle: nn.Module
    conv1: nn.Module
    blocks: nn.ModuleList
    conv2: nn.Module
    pool: nn.Module
    mlp: nn.Module
    end: nn.Sequential
    # "released": end = Linear + activation, as released. "tanh": the end's
    # Linear, then tanh (no parameters change; see Preset.latent_bound).
    bound: str = "released"

    def forward(self, inp_img: torch.Tensor, gt: Optional[torch.Tensor] = None) -> torch.Tensor:
        x = torch.cat([gt, inp_img], dim=1) if gt is not None else inp_img
        x = self.conv1(self.pixel_unshuffle(x))
        for block in self.blocks:
            x = block(x) + x
        x = self.mlp(_tokens(self.pool(self.conv2(x))))
        if self.bound == "tanh":
            return torch.tanh(self.end[0](x))
        return self.end(x)


class LatentEncoderGELU(_LatentEncoder):
    """Official `latent_encoder_gelu`."""

    def __init__(self, in_chans: int = 6, embed_dim: int = 64, block_num: int = 4, stage: int = 1,
                 group: int = 4, patch_expansion: float = 0.5, channel_expansion: float = 4) -> None:
        super().__init__()
        if in_chans != 6 // stage:
            raise ValueError(f"latent encoder: in_chans {in_chans} does not fit stage {stage}")
        self.group = group
        self.pixel_unshuffle = PixelUnshuffle(4)
        self.conv1 = nn.Sequential(nn.Conv2d(in_chans * 16, embed_dim, 3, 1, 1), nn.GELU())
        self.blocks = nn.ModuleList([
            nn.Sequential(nn.Conv2d(embed_dim, embed_dim, 3, 1, 1), nn.GELU(),
                          nn.Conv2d(embed_dim, embed_dim, 3, 1, 1))
            for _ in range(block_num)])
        self.conv2 = nn.Conv2d(embed_dim, embed_dim, 3, 1, 1)
        self.pool = AdaptiveAvgPool2d((group, group))
        self.mlp = MLP(group * group, embed_dim, patch_expansion, channel_expansion)
        self.end = nn.Sequential(nn.Linear(embed_dim, embed_dim * 4), nn.GELU())


class LatentEncoderLReLU(_LatentEncoder):
    """Official `latent_encoder_lrelu`."""

    def __init__(self, in_chans: int = 6, embed_dim: int = 64, block_num: int = 4, stage: int = 1,
                 group: int = 4, patch_expansion: float = 0.5, channel_expansion: float = 4) -> None:
        super().__init__()
        if in_chans != 6 // stage:
            raise ValueError(f"latent encoder: in_chans {in_chans} does not fit stage {stage}")
        self.group = group
        self.pixel_unshuffle = PixelUnshuffle(4)
        self.conv1 = nn.Sequential(nn.Conv2d(in_chans * 16, embed_dim, 3, 1, 1), nn.LeakyReLU(0.1, True))
        self.blocks = nn.ModuleList([
            nn.Sequential(nn.Conv2d(embed_dim, embed_dim, 3, 1, 1), nn.LeakyReLU(0.1, True),
                          nn.Conv2d(embed_dim, embed_dim, 3, 1, 1))
            for _ in range(block_num)])
        self.conv2 = nn.Sequential(
            nn.Conv2d(embed_dim, embed_dim * 2, kernel_size=3, padding=1), nn.LeakyReLU(0.1, True),
            nn.Conv2d(embed_dim * 2, embed_dim * 2, kernel_size=3, padding=1), nn.LeakyReLU(0.1, True),
            nn.Conv2d(embed_dim * 2, embed_dim * 4, kernel_size=3, padding=1), nn.LeakyReLU(0.1, True),
        )
        self.pool = AdaptiveAvgPool2d((group, group))
        self.mlp = MLP(group * group, embed_dim * 4, patch_expansion, channel_expansion)
        self.end = nn.Sequential(nn.Linear(embed_dim * 4, embed_dim * 4), nn.LeakyReLU(0.1, True))
