from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from engine_build import infer


def test_reference_runs_and_repeats(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    src = tmp_path / "in.png"
    Image.fromarray(rng.integers(0, 256, (37, 45, 3), dtype=np.uint8)).save(src)
    outs = []
    for i in range(2):
        dst = tmp_path / f"out{i}.png"
        assert infer.main(["--preset", "s", str(src), str(dst)]) == 0
        with Image.open(dst) as im:
            assert im.size == (45, 37) and im.mode == "RGB"
            outs.append(np.asarray(im))
    assert np.array_equal(outs[0], outs[1])


def test_pad_is_reflect_right_bottom() -> None:
    import torch
    x = torch.arange(30, dtype=torch.float32).reshape(1, 1, 5, 6)
    y = infer.pad_to(x, 8)
    assert y.shape == (1, 1, 8, 8)
    assert torch.equal(y[..., :5, :6], x)
    assert float(y[0, 0, 0, 6]) == float(x[0, 0, 0, 4])  # mirror without repeating the edge
    assert float(y[0, 0, 5, 0]) == float(x[0, 0, 3, 0])
