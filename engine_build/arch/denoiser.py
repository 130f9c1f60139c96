"""The two released denoisers of the latent diffusion prior.

MixerDenoiser (official `denoising`, GoPro) predicts the noise; SimpleDenoiser
(official `simple_denoise`, RealBlur) predicts x0. Each takes the noisy prior
x [b,16,C], the condition c from LE_DM [b,16,C] and the step index.
"""
from __future__ import annotations

import torch
from torch import nn

from .mixer import MLP


class MixerDenoiser(nn.Module):
    def __init__(self, in_channel: int = 256, out_channel: int = 256, inner_channel: int = 512,
                 block_num: int = 4, layerscale_value: float = 1e-3, group: int = 4,
                 patch_expansion: float = 0.5, channel_expansion: float = 2) -> None:
        super().__init__()
        self.time_mlp = nn.Parameter(layerscale_value * torch.ones(1), requires_grad=True)
        self.first_layer = nn.Sequential(nn.Linear(in_channel * 3, inner_channel),
                                         nn.LeakyReLU(negative_slope=0.2, inplace=True))
        self.blocks = nn.ModuleList([
            nn.Sequential(MLP(group * group, inner_channel, patch_expansion, channel_expansion), nn.GELU())
            for _ in range(block_num - 2)])
        self.final_layer = nn.Sequential(nn.Linear(inner_channel, out_channel), nn.GELU())

    def forward(self, x: torch.Tensor, c: torch.Tensor, step: int) -> torch.Tensor:
        # The release feeds a tensor full of (t+1) shaped like x, scaled by a
        # learned scalar; a constant times the parameter is the same thing.
        t = torch.full_like(x, float(step)) * self.time_mlp
        h = self.first_layer(torch.cat([x, t, c], dim=-1))
        for block in self.blocks:
            h = block(h)
        return self.final_layer(h)


class _ResMLP(nn.Module):
    """Official ResMLP: despite its name it has no residual connection."""

    def __init__(self, n_feats: int = 512) -> None:
        super().__init__()
        self.resmlp = nn.Sequential(nn.Linear(n_feats, n_feats), nn.LeakyReLU(0.1, True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.resmlp(x)


class SimpleDenoiser(nn.Module):
    def __init__(self, n_feats: int = 64, n_denoise_res: int = 5, timesteps: int = 5) -> None:
        super().__init__()
        # The release never passes `timesteps`, so max_period is 50 whatever T is.
        self.max_period = timesteps * 10
        n4 = 4 * n_feats
        layers: list[nn.Module] = [nn.Linear(n4 * 2 + 1, n4), nn.LeakyReLU(0.1, True)]
        layers += [_ResMLP(n4) for _ in range(n_denoise_res)]
        self.resmlp = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, c: torch.Tensor, step: int) -> torch.Tensor:
        t = torch.full_like(x[..., :1], float(step)) / self.max_period
        return self.resmlp(torch.cat([c, t, x], dim=-1))
