"""The latent diffusion prior at inference: LE_DM condition, then T reverse
steps without added noise, starting from caller-supplied noise.

GoPro (official HI_Diff_S2 local implementation): the denoiser predicts the
noise, x0 = sqrt(1/abar_t) x_t - sqrt(1/abar_t - 1) eps, clamped to [-1, 1],
and the step returns the posterior mean. RealBlur (official ldm DDPM, x0
parameterisation, clip_denoised False): the denoiser predicts x0 directly.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .arch.denoiser import MixerDenoiser, SimpleDenoiser
from .arch.latent_encoder import LatentEncoderGELU, LatentEncoderLReLU
from .presets import Preset


def make_betas(schedule: str, timesteps: int, start: float, end: float) -> np.ndarray:
    if schedule == "linear":  # hi_diff/utils/beta_schedule.py 'linear'
        return np.linspace(start, end, timesteps, dtype=np.float64)
    if schedule == "sqrt_linear_ldm":  # ldm/util2.py 'linear': linear in sqrt(beta)
        return np.linspace(start ** 0.5, end ** 0.5, timesteps, dtype=np.float64) ** 2
    raise ValueError(f"unknown beta schedule {schedule!r}")


class Schedule:
    """Per-step coefficients, float64 in numpy, rounded to float32 as the
    release does when it registers them as buffers."""

    def __init__(self, betas: np.ndarray) -> None:
        alphas = 1.0 - betas
        abar = np.cumprod(alphas)
        abar_prev = np.append(1.0, abar[:-1])
        f32 = lambda a: [float(np.float32(v)) for v in a]  # noqa: E731
        self.timesteps = len(betas)
        self.abar = f32(abar)
        self.sqrt_abar = f32(np.sqrt(abar))
        self.sqrt_one_minus_abar = f32(np.sqrt(1.0 - abar))
        self.sqrt_recip_abar = f32(np.sqrt(1.0 / abar))
        self.sqrt_recipm1_abar = f32(np.sqrt(1.0 / abar - 1))
        self.coef1 = f32(betas * np.sqrt(abar_prev) / (1.0 - abar))
        self.coef2 = f32((1.0 - abar_prev) * np.sqrt(alphas) / (1.0 - abar))


def build_le(preset: Preset, stage: int) -> nn.Module:
    """LE (stage 1, sharp + blurry in, bounded as the preset says) or LE_DM
    (stage 2, blurry in, as released)."""
    cls = LatentEncoderGELU if preset.le_kind == "gelu" else LatentEncoderLReLU
    le = cls(in_chans=6 // stage, stage=stage, **preset.le)
    if stage == 1:
        if preset.latent_bound not in ("released", "tanh"):
            raise ValueError(f"preset {preset.name}: latent_bound {preset.latent_bound!r}: expected 'released' or 'tanh'")
        le.bound = preset.latent_bound
    return le


def build_denoiser(preset: Preset) -> nn.Module:
    if preset.denoiser_kind == "mixer":
        return MixerDenoiser(**preset.denoiser)
    return SimpleDenoiser(**preset.denoiser)


class LatentPrior(nn.Module):
    """blur [b,3,H,W] + starting noise [b,16,256] -> prior z [b,16,256].

    Holds LE_DM as `le_dm` and the denoiser as `denoiser`; their state dicts
    are the official net_le_dm.pth and net_d.pth."""

    def __init__(self, preset: Preset) -> None:
        super().__init__()
        self.le_dm = build_le(preset, stage=2)
        self.denoiser = build_denoiser(preset)
        self.predicts_noise = preset.denoiser_kind == "mixer"
        self.sched = Schedule(make_betas(preset.schedule, preset.timesteps,
                                         preset.linear_start, preset.linear_end))

    def step(self, x: torch.Tensor, c: torch.Tensor, i: int) -> torch.Tensor:
        """One reverse step t=i -> i-1 (posterior mean, no noise added)."""
        s = self.sched
        if self.predicts_noise:
            eps = self.denoiser(x, c, i + 1)  # the release feeds t+1
            x0 = s.sqrt_recip_abar[i] * x - s.sqrt_recipm1_abar[i] * eps
            x0 = x0.clamp(-1.0, 1.0)
        else:
            x0 = self.denoiser(x, c, i)
        return s.coef1[i] * x0 + s.coef2[i] * x

    def reverse(self, c: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        for i in reversed(range(self.sched.timesteps)):
            x = self.step(x, c, i)
        return x

    def forward(self, blur: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return self.reverse(self.le_dm(blur), noise)

    def q_sample(self, z0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Noise the stage-one prior to step T (training, stage two)."""
        t = self.sched.timesteps - 1
        if self.predicts_noise:
            # HI_Diff_S2: sqrt_alpha_cumprod=alphas_cumprod[t-1] (sic), then
            # a*z0 + sqrt(1-a^2)*noise.
            a = self.sched.abar[t]
            return a * z0 + (1 - a * a) ** 0.5 * noise
        return self.sched.sqrt_abar[t] * z0 + self.sched.sqrt_one_minus_abar[t] * noise
