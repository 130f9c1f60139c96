from __future__ import annotations

import numpy as np
import torch

from engine_build import presets
from engine_build.diffusion import Schedule, make_betas
from engine_build.model import build


def test_gopro_schedule() -> None:
    s = Schedule(make_betas("linear", 8, 0.1, 0.99))
    # docs/ARCHITECTURE.md: the first reverse step multiplies by about 174.
    assert abs(s.sqrt_recip_abar[7] - 173.962) < 1e-2
    # The last step returns x0 itself.
    assert s.coef1[0] == 1.0 and s.coef2[0] == 0.0


def test_realblur_schedule_is_linear_in_sqrt_beta() -> None:
    b = make_betas("sqrt_linear_ldm", 16, 0.1, 0.99)
    assert np.allclose(np.diff(np.sqrt(b)), np.diff(np.sqrt(b))[0])
    assert abs(b[0] - 0.1) < 1e-12 and abs(b[-1] - 0.99) < 1e-12


def test_gopro_reverse_step_by_hand() -> None:
    """One reverse step written out from the release's formulas."""
    m = build(presets.get("gopro"))
    p = m.prior
    x = torch.randn(1, 16, 256)
    c = torch.randn(1, 16, 256)
    i = 5
    with torch.no_grad():
        eps = p.denoiser(x, c, i + 1)
        s = p.sched
        x0 = (s.sqrt_recip_abar[i] * x - s.sqrt_recipm1_abar[i] * eps).clamp(-1, 1)
        want = s.coef1[i] * x0 + s.coef2[i] * x
        got = p.step(x, c, i)
    assert torch.allclose(got, want)


def test_prior_output_bounded_for_noise_predictor() -> None:
    """x0 is clamped to [-1, 1] and the last step returns x0: the prior is bounded."""
    m = build(presets.get("gopro"))
    with torch.no_grad():
        z = m.prior(torch.rand(1, 3, 64, 64), 3 * torch.randn(1, 16, 256))
    assert float(z.abs().max()) <= 1.0
