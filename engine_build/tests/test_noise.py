from __future__ import annotations

import numpy as np

from engine_build.noise import starting_noise


def test_matches_go() -> None:
    # deblur/noise_test.go asserts the same values.
    want = np.array([-0.45275774598121643, 0.20776604115962982, 2.6506059169769287,
                     -0.4904228150844574, -0.9886041283607483], dtype=np.float32)
    assert np.array_equal(starting_noise(0, 5), want)


def test_standard_normal_and_seeded() -> None:
    a = starting_noise(12345, 4096)
    assert a.dtype == np.float32 and a.shape == (4096,)
    assert abs(a.mean()) < 0.05 and 0.9 < a.var() < 1.1
    assert np.array_equal(a, starting_noise(12345, 4096))
    assert not np.array_equal(a[:8], starting_noise(12346, 8))
    assert np.array_equal(starting_noise(7, 6)[:5], starting_noise(7, 5))
