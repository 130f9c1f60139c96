from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from engine_build import export, presets
from engine_build.model import build


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("s")
    assert export.main(["--preset", "s", "--out", str(out), "--fixtures"]) == 0
    return out


def _dims(v: onnx.ValueInfoProto) -> list[object]:
    return [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]


def test_contract_names_shapes_types(exported: Path) -> None:
    want = {
        "prior": ({"blur": [1, 3, "H", "W"], "noise": [1, 16, 256]}, {"prior": [1, 16, 256]}),
        "transformer": ({"blur": [1, 3, "H", "W"], "prior": [1, 16, 256]}, {"sharp": [1, 3, "H", "W"]}),
    }
    for graph, (ins, outs) in want.items():
        m = onnx.load(str(exported / f"{graph}.onnx"))
        assert [o.version for o in m.opset_import if o.domain in ("", "ai.onnx")] == [17]
        assert {i.name: _dims(i) for i in m.graph.input} == ins
        assert {o.name: _dims(o) for o in m.graph.output} == outs
        for v in list(m.graph.input) + list(m.graph.output):
            assert v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT


def test_layer_norm_nodes_and_metadata(exported: Path) -> None:
    shas = set()
    for graph in ("prior", "transformer"):
        m = onnx.load(str(exported / f"{graph}.onnx"))
        ops = {n.op_type for n in m.graph.node}
        assert "LayerNormalization" in ops
        # No hand-rolled variance (ReduceMean + Pow) layer norms left.
        assert "Pow" not in ops
        meta = {p.key: p.value for p in m.metadata_props}
        assert meta["model"] == "HI-Diff" and meta["preset"] == "s" and meta["graph"] == graph
        assert meta["timesteps"] == "8" and meta["pad_multiple"] == "8"
        assert len(meta["weights_sha256"]) == 64
        shas.add(meta["weights_sha256"])
    assert len(shas) == 1


def test_fixtures(exported: Path) -> None:
    man = json.loads((exported / "fixtures" / "manifest.json").read_text())
    assert [c["name"] for c in man["cases"]] == ["96x128", "104x136"]
    for c in man["cases"]:
        blur = np.fromfile(exported / "fixtures" / c["blur"], dtype="<f4")
        sharp = np.fromfile(exported / "fixtures" / c["sharp"], dtype="<f4")
        prior = np.fromfile(exported / "fixtures" / c["prior"], dtype="<f4")
        assert blur.size == sharp.size == 3 * c["height"] * c["width"]
        assert prior.size == 16 * 256 and np.isfinite(sharp).all()


def test_bad_weights_folder_is_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert export.main(["--preset", "s", "--weights", str(tmp_path), "--out", str(tmp_path / "o")]) == 1
    assert "net_g.pth: missing" in capsys.readouterr().err


def test_decomposed_layernorm_same_function_no_fused_nodes(tmp_path: Path) -> None:
    """--layernorm decomposed (for TensorRT 8.5): every layer norm becomes
    elementary ops with the same weights; the network's output is unchanged
    up to float rounding, and the graphs hold no LayerNormalization."""
    m = build(presets.get("s"), seed=3).eval()
    blur = torch.rand(1, 3, 40, 56)
    noise = torch.randn(1, 16, 256)
    with torch.no_grad():
        want = m(blur, noise)
        n = export.decompose_layernorms(m)
        got = m(blur, noise)
    assert n > 0 and not any(isinstance(x, torch.nn.LayerNorm) for x in m.modules())
    assert float((got - want).abs().max()) < 1e-5
    assert export.main(["--preset", "s", "--out", str(tmp_path), "--layernorm", "decomposed"]) == 0
    for graph in ("prior", "transformer"):
        ops = [nd.op_type for nd in onnx.load(str(tmp_path / f"{graph}.onnx")).graph.node]
        assert "LayerNormalization" not in ops and ops.count("Sqrt") > 0
