"""Export a HI-Diff preset to the two ONNX graphs of the contract.

    python3 -m engine_build.export --preset gopro --weights DIR --out OUT [--fixtures]
        [--layernorm decomposed] [--precision fp16|fp32]

Without --weights the network gets seeded random weights (for tests). With
--fixtures, parity fixtures (inputs and PyTorch outputs as raw float32) are
written under OUT/fixtures for the Go backend's tests.

--precision fp16 (the default) also writes OUT/transformer.fp16.onnx, the
transformer in float16 with float32 islands for TensorRT's strongly typed
FP16 engines (engine_build/precision.py); prior.onnx and transformer.onnx
stay float32 whatever the precision (ONNX Runtime, FP32 engines, and
TensorRT 8.x's weakly typed build read them). --precision fp32 writes the
float32 pair only, and removes a transformer.fp16.onnx left in OUT by an
earlier export, which would no longer match.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from . import checkpoints, contract, precision, presets
from .arch.transformer import WithBiasLayerNorm
from .model import HIDiff, build
from .noise import prior_noise

FIXTURE_SIZES = ((96, 128), (104, 136))


class _PriorGraph(nn.Module):
    def __init__(self, m: HIDiff) -> None:
        super().__init__()
        self.prior = m.prior

    def forward(self, blur: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return self.prior(blur, noise)


class _TransformerGraph(nn.Module):
    def __init__(self, m: HIDiff) -> None:
        super().__init__()
        self.transformer = m.transformer

    def forward(self, blur: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
        return self.transformer(blur, prior)


def metadata(m: HIDiff, graph: str, weights_sha256: str, training_data: str) -> dict[str, str]:
    p = m.preset
    return {
        "model": contract.MODEL_NAME,
        "version": contract.EXPORT_VERSION,
        "preset": p.name,
        "graph": graph,
        "timesteps": str(p.timesteps),
        "pad_multiple": str(p.pad_multiple),
        "prior_tokens": str(contract.PRIOR_TOKENS),
        "prior_channels": str(contract.PRIOR_CHANNELS),
        "weights_sha256": weights_sha256,
        "training_data": training_data,
        "denoiser": "noise" if m.prior.predicts_noise else "x0",
        precision.KEY_PRECISION: "fp32",
    }


def _export_one(module: nn.Module, args: tuple[torch.Tensor, ...], inputs: tuple[str, ...],
                outputs: tuple[str, ...], dynamic: dict[str, dict[int, str]], path: Path,
                meta: dict[str, str]) -> None:
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        # torch 1.13 warns about its own prim::Constant shape inference on
        # every graph; the contract checks below are what matter.
        warnings.filterwarnings("ignore", message="The shape inference of prim::Constant")
        raw = Path(tmp) / "raw.onnx"
        with torch.no_grad():
            torch.onnx.export(module, args, str(raw), opset_version=contract.OPSET,
                              input_names=list(inputs), output_names=list(outputs),
                              dynamic_axes=dynamic, do_constant_folding=True)
        g = onnx.load(str(raw))
    _pin_batch(g)
    del g.metadata_props[:]
    for k, v in meta.items():
        g.metadata_props.add(key=k, value=v)
    g.producer_name = "hidiffd-engine_build"
    onnx.checker.check_model(g)
    tmp_path = path.with_suffix(".onnx.tmp")
    onnx.save(g, str(tmp_path))
    tmp_path.replace(path)


def _pin_batch(g: onnx.ModelProto) -> None:
    """The contract's batch is 1; torch's shape inference sometimes leaves the
    output's batch as a symbolic name, which consumers would read as dynamic."""
    for v in list(g.graph.input) + list(g.graph.output):
        dims = v.type.tensor_type.shape.dim
        if dims and dims[0].dim_param:
            dims[0].ClearField("dim_param")
            dims[0].dim_value = 1


class DecomposedLayerNorm(nn.Module):
    """Layer norm over the last dim written out as ReduceMean, Sub, Mul,
    ReduceMean, Add, Sqrt, Div, Mul, Add: TensorRT before 8.6 (JetPack 5,
    the last JetPack for Xavier) has no importer for ONNX LayerNormalization.
    trt/recipe.go finds this chain and keeps it in FP32."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight.detach().clone())
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone())
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d = x - x.mean(-1, keepdim=True)
        y = d / torch.sqrt((d * d).mean(-1, keepdim=True) + self.eps) * self.weight
        return y if self.bias is None else y + self.bias


def decompose_layernorms(m: nn.Module) -> int:
    """Replace every fused layer norm (nn.LayerNorm over one dim, and the
    Transformer's WithBiasLayerNorm) by DecomposedLayerNorm, in place;
    returns how many. Same weights, same function (float rounding aside)."""
    count = 0
    for parent in list(m.modules()):
        for name, child in list(parent.named_children()):
            if not isinstance(child, (nn.LayerNorm, WithBiasLayerNorm)):
                continue
            if isinstance(child, nn.LayerNorm) and len(child.normalized_shape) != 1:
                raise ValueError(f"{name}: layer norm over {child.normalized_shape}, expected one dim")
            setattr(parent, name, DecomposedLayerNorm(child.weight, child.bias, child.eps))
            count += 1
    return count


def export(m: HIDiff, out: Path, weights_sha256: str, training_data: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    h, w = 64, 64
    blur = torch.rand(1, 3, h, w)
    noise = torch.randn(1, contract.PRIOR_TOKENS, contract.PRIOR_CHANNELS)
    prior = torch.randn(1, contract.PRIOR_TOKENS, contract.PRIOR_CHANNELS)
    img_axes = {2: "H", 3: "W"}
    _export_one(_PriorGraph(m).eval(), (blur, noise), contract.PRIOR_INPUTS, contract.PRIOR_OUTPUTS,
                {"blur": img_axes}, out / "prior.onnx", metadata(m, "prior", weights_sha256, training_data))
    _export_one(_TransformerGraph(m).eval(), (blur, prior), contract.TRANSFORMER_INPUTS,
                contract.TRANSFORMER_OUTPUTS, {"blur": img_axes, "sharp": img_axes},
                out / "transformer.onnx", metadata(m, "transformer", weights_sha256, training_data))


def fixture_image(h: int, w: int, seed: int) -> torch.Tensor:
    """A smooth, image-like test input in [0, 1] (random values alone would be
    an unrealistically hard case for a deblurring net's activations)."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, h // 8 + 1, w // 8 + 1, generator=g)
    img = nn.functional.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)
    img = img + 0.05 * torch.rand(1, 3, h, w, generator=g)
    return img.clamp(0, 1)


def write_fixtures(m: HIDiff, out: Path, seed: int = 1) -> None:
    fx = out / "fixtures"
    cases = []
    for i, (h, w) in enumerate(FIXTURE_SIZES):
        name = f"{h}x{w}"
        d = fx / name
        d.mkdir(parents=True, exist_ok=True)
        blur = fixture_image(h, w, seed + i)
        noise = prior_noise(seed + i)
        with torch.no_grad():
            prior = m.prior(blur, noise)
            sharp = m.transformer(blur, prior)
        case = {"name": name, "height": h, "width": w}
        for key, t in (("blur", blur), ("noise", noise), ("prior", prior), ("sharp", sharp)):
            rel = f"{name}/{key}.f32"
            t.detach().numpy().astype("<f4").tofile(fx / rel)
            case[key] = rel
        cases.append(case)
    (fx / "manifest.json").write_text(json.dumps({"preset": m.preset.name, "cases": cases}, indent=1) + "\n")


def load_model(preset_name: str, weights: str | None, seed: int) -> tuple[HIDiff, str, str]:
    """(model, weights sha256, training-data note) for --weights or seeded random weights."""
    preset = presets.get(preset_name)
    m = build(preset, seed)
    if weights:
        sha = checkpoints.load_folder(m, weights)
        return m.eval(), sha, preset.training_data
    return m, checkpoints.random_weights_sha256(m), f"none (seeded random weights, seed {seed})"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python3 -m engine_build.export", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", required=True, choices=sorted(presets.PRESETS))
    ap.add_argument("--weights", help="folder with net_g.pth, net_le_dm.pth, net_d.pth")
    ap.add_argument("--out", required=True, help="output folder for prior.onnx and transformer.onnx")
    ap.add_argument("--seed", type=int, default=0, help="seed of the random weights (without --weights)")
    ap.add_argument("--training-data", help="training-data note for the metadata")
    ap.add_argument("--fixtures", action="store_true", help="also write parity fixtures under OUT/fixtures")
    ap.add_argument("--layernorm", choices=("fused", "decomposed"), default="fused",
                    help="fused: ONNX LayerNormalization (TensorRT 8.6+, ONNX Runtime); decomposed: "
                    "elementary ops, for TensorRT 8.5 (JetPack 5)")
    ap.add_argument("--precision", choices=("fp16", "fp32"), default="fp16",
                    help="fp16: also write transformer.fp16.onnx (float16 with float32 islands, for strongly "
                    "typed TensorRT FP16 engines); fp32: the float32 graphs only")
    a = ap.parse_args(argv)
    try:
        m, sha, data = load_model(a.preset, a.weights, a.seed)
    except checkpoints.CheckpointError as e:
        print(f"export: {e}", file=sys.stderr)
        return 1
    if a.layernorm == "decomposed":
        print(f"export: {decompose_layernorms(m)} layer norms decomposed")
    out = Path(a.out)
    export(m, out, sha, a.training_data or data)
    if a.fixtures:
        write_fixtures(m, out)
    print(f"export: {a.preset} -> {out}/prior.onnx, {out}/transformer.onnx (weights sha256 {sha[:12]}…)")
    mixed = out / precision.MIXED_FILE
    if a.precision == "fp16":
        try:
            islands = precision.write_mixed(out)
        except precision.PrecisionError as e:
            print(f"export: {mixed}: {e}", file=sys.stderr)
            return 1
        print(f"export: {mixed}: float16 with float32 islands ({islands.summary()})")
    elif mixed.exists():
        mixed.unlink()
        print(f"export: removed {mixed} (it belonged to an earlier export)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
