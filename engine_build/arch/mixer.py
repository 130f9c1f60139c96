"""The MLP-Mixer block shared by the latent encoder and the GoPro denoiser."""
from __future__ import annotations

import torch
from torch import nn


class MLP(nn.Module):
    """Token mixing then channel mixing, each with a pre-LayerNorm residual."""

    def __init__(self, num_patches: int, embed_dims: int, patch_expansion: float,
                 channel_expansion: float) -> None:
        super().__init__()
        patch_mix_dims = int(patch_expansion * num_patches)
        channel_mix_dims = int(channel_expansion * embed_dims)
        self.patch_mixer = nn.Sequential(
            nn.Linear(num_patches, patch_mix_dims),
            nn.GELU(),
            nn.Linear(patch_mix_dims, num_patches),
        )
        self.channel_mixer = nn.Sequential(
            nn.Linear(embed_dims, channel_mix_dims),
            nn.GELU(),
            nn.Linear(channel_mix_dims, embed_dims),
        )
        self.norm1 = nn.LayerNorm(embed_dims)
        self.norm2 = nn.LayerNorm(embed_dims)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.patch_mixer(self.norm1(x).transpose(1, 2)).transpose(1, 2)
        x = x + self.channel_mixer(self.norm2(x))
        return x
