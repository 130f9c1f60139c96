"""Strict loading of the official checkpoint folder (net_g.pth, net_le_dm.pth,
net_d.pth, each {'params': state_dict}) into our HI-Diff definition."""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .model import HIDiff

FILES = ("net_g", "net_le_dm", "net_d")


class CheckpointError(Exception):
    pass


def load_pickle(path: Path) -> Any:
    """torch.load of our own training checkpoints, which hold numpy and
    Python random states besides tensors: PyTorch 2.6+ refuses those unless
    weights_only=False (1.13, Debian's, knows the argument too)."""
    return torch.load(path, map_location="cpu", weights_only=False)


def _state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise CheckpointError(f"{path}: missing (a weights folder holds {', '.join(f + '.pth' for f in FILES)})")
    try:
        obj = torch.load(path, map_location="cpu")
    except Exception as e:  # corrupt file, not a torch pickle, ...
        raise CheckpointError(f"{path}: cannot be read as a PyTorch checkpoint: {e}") from e
    if isinstance(obj, dict) and "params" in obj and isinstance(obj["params"], dict):
        sd = obj["params"]
    elif isinstance(obj, dict) and "params_ema" in obj:
        raise CheckpointError(f"{path}: has 'params_ema' but no 'params' key")
    else:
        raise CheckpointError(f"{path}: expected a dict with key 'params' holding a state dict")
    # Multi-GPU training saves keys with a 'module.' prefix; the release strips it too.
    return {k[7:] if k.startswith("module.") else k: v for k, v in sd.items()}


def load_strict(net: nn.Module, sd: dict[str, torch.Tensor], label: str) -> None:
    """load_state_dict(strict=True), but one error listing every missing and
    unexpected key and every wrong shape."""
    own = net.state_dict()
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    shapes = sorted(f"{k}: checkpoint {tuple(sd[k].shape)}, model {tuple(own[k].shape)}"
                    for k in set(own) & set(sd) if tuple(own[k].shape) != tuple(sd[k].shape))
    if missing or unexpected or shapes:
        parts = [f"{label} does not match the model:"]
        if missing:
            parts.append(f"  missing keys ({len(missing)}): " + ", ".join(missing))
        if unexpected:
            parts.append(f"  unexpected keys ({len(unexpected)}): " + ", ".join(unexpected))
        if shapes:
            parts.append(f"  wrong shapes ({len(shapes)}): " + "; ".join(shapes))
        raise CheckpointError("\n".join(parts))
    net.load_state_dict(sd, strict=True)


def load_folder(model: HIDiff, folder: str | Path) -> str:
    """Loads the three files strictly; returns the sha256 over them (in the
    fixed order net_g, net_le_dm, net_d) for the export metadata."""
    folder = Path(folder)
    h = hashlib.sha256()
    for name, net in model.networks().items():
        path = folder / f"{name}.pth"
        load_strict(net, _state_dict(path), str(path))
        h.update(path.read_bytes())
    return h.hexdigest()


def save_folder(model: HIDiff, folder: str | Path) -> str:
    """Writes the three files in the official layout; returns their sha256."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    h = hashlib.sha256()
    for name, net in model.networks().items():
        path = folder / f"{name}.pth"
        torch.save({"params": net.state_dict()}, path)
        h.update(path.read_bytes())
    return h.hexdigest()


def random_weights_sha256(model: HIDiff) -> str:
    """A stable fingerprint of in-memory weights (used for seeded random
    weights, which have no files)."""
    h = hashlib.sha256()
    for name, net in model.networks().items():
        for k, v in net.state_dict().items():
            h.update(f"{name}.{k}".encode())
            h.update(v.detach().cpu().numpy().tobytes())
    return h.hexdigest()
