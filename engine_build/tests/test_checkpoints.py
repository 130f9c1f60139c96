from __future__ import annotations

from pathlib import Path

import pytest
import torch

from engine_build import checkpoints, presets
from engine_build.model import build


def test_roundtrip_official_layout(tmp_path: Path) -> None:
    m = build(presets.get("s"), seed=1)
    sha = checkpoints.save_folder(m, tmp_path)
    for f in ("net_g.pth", "net_le_dm.pth", "net_d.pth"):
        obj = torch.load(tmp_path / f)
        assert set(obj) == {"params"}
    m2 = build(presets.get("s"), seed=2)
    assert checkpoints.load_folder(m2, tmp_path) == sha
    for a, b in zip(m.parameters(), m2.parameters()):
        assert torch.equal(a, b)


def test_module_prefix_is_stripped(tmp_path: Path) -> None:
    m = build(presets.get("s"), seed=1)
    checkpoints.save_folder(m, tmp_path)
    sd = torch.load(tmp_path / "net_d.pth")["params"]
    torch.save({"params": {"module." + k: v for k, v in sd.items()}}, tmp_path / "net_d.pth")
    checkpoints.load_folder(build(presets.get("s")), tmp_path)


def test_mismatch_lists_missing_unexpected_and_shapes(tmp_path: Path) -> None:
    m = build(presets.get("s"), seed=1)
    checkpoints.save_folder(m, tmp_path)
    sd = torch.load(tmp_path / "net_g.pth")["params"]
    sd.pop("output.weight")
    sd["extra.weight"] = torch.zeros(1)
    sd["patch_embed.proj.weight"] = torch.zeros(1, 2, 3, 3)
    torch.save({"params": sd}, tmp_path / "net_g.pth")
    with pytest.raises(checkpoints.CheckpointError) as e:
        checkpoints.load_folder(build(presets.get("s")), tmp_path)
    msg = str(e.value)
    assert "net_g.pth" in msg
    assert "missing keys (1): output.weight" in msg
    assert "unexpected keys (1): extra.weight" in msg
    assert "patch_embed.proj.weight: checkpoint (1, 2, 3, 3)" in msg


def test_gopro_preset_refuses_small_weights(tmp_path: Path) -> None:
    checkpoints.save_folder(build(presets.get("s")), tmp_path)
    with pytest.raises(checkpoints.CheckpointError, match="wrong shapes"):
        checkpoints.load_folder(build(presets.get("gopro")), tmp_path)


def test_missing_file_and_bad_layout(tmp_path: Path) -> None:
    with pytest.raises(checkpoints.CheckpointError, match="net_g.pth: missing"):
        checkpoints.load_folder(build(presets.get("s")), tmp_path)
    checkpoints.save_folder(build(presets.get("s")), tmp_path)
    torch.save({"state": {}}, tmp_path / "net_g.pth")
    with pytest.raises(checkpoints.CheckpointError, match="key 'params'"):
        checkpoints.load_folder(build(presets.get("s")), tmp_path)
    (tmp_path / "net_g.pth").write_text("not a checkpoint")
    with pytest.raises(checkpoints.CheckpointError, match="cannot be read"):
        checkpoints.load_folder(build(presets.get("s")), tmp_path)
