"""The whole HI-Diff network for one preset: the latent prior (LE_DM +
denoiser) and the guided Transformer, plus parameter counting."""
from __future__ import annotations

import torch
from torch import nn

from .arch.transformer import Transformer
from .diffusion import LatentPrior
from .presets import Preset


class HIDiff(nn.Module):
    def __init__(self, preset: Preset) -> None:
        super().__init__()
        self.preset = preset
        self.prior = LatentPrior(preset)
        self.transformer = Transformer(**preset.transformer)

    @property
    def pad_multiple(self) -> int:
        return self.preset.pad_multiple

    def forward(self, blur: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return self.transformer(blur, self.prior(blur, noise))

    def networks(self) -> dict[str, nn.Module]:
        """The three released checkpoint files and the modules they fill."""
        return {"net_g": self.transformer, "net_le_dm": self.prior.le_dm, "net_d": self.prior.denoiser}


def count_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def build(preset: Preset, seed: int = 0) -> HIDiff:
    """The network with seeded random weights (PyTorch's default init)."""
    torch.manual_seed(seed)
    return HIDiff(preset).eval()
