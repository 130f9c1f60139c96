"""The FP32 islands and the float16 rewrite (engine_build/precision.py).
The numerics of the rewritten graphs on real photographs are checked by the
Go test ort/fp16_test.go, which runs them on ONNX Runtime."""
from __future__ import annotations

import collections
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from engine_build import export, precision, presets
from engine_build.model import build

FLOAT, FLOAT16 = TensorProto.FLOAT, TensorProto.FLOAT16


def _tiny() -> onnx.ModelProto:
    """x -> MatMul(W) -> LayerNormalization -> Softmax -> MatMul(W, the same
    weight) -> L2 normalisation (ReduceL2, Clip, Expand, Div) -> Add(x) -> y,
    plus a Cast to float and a float-only input (Resize's scales)."""
    w = numpy_helper.from_array(np.linspace(-1, 1, 64, dtype=np.float32).reshape(8, 8), "W")
    scale = numpy_helper.from_array(np.ones(8, np.float32), "scale")
    bias = numpy_helper.from_array(np.zeros(8, np.float32), "bias")
    eps = numpy_helper.from_array(np.array(1e-12, np.float32), "eps")
    scales = numpy_helper.from_array(np.array([1, 1, 1], np.float32), "scales")
    nodes = [
        helper.make_node("MatMul", ["x", "W"], ["a"], name="mm1"),
        helper.make_node("LayerNormalization", ["a", "scale", "bias"], ["ln"], name="ln", axis=-1),
        helper.make_node("Softmax", ["ln"], ["sm"], name="softmax", axis=-1),
        helper.make_node("MatMul", ["sm", "W"], ["b"], name="mm2"),
        helper.make_node("ReduceL2", ["b"], ["n"], name="l2", axes=[-1], keepdims=1),
        helper.make_node("Clip", ["n", "eps"], ["nc"], name="clip"),
        helper.make_node("Shape", ["b"], ["shp"], name="shape"),
        helper.make_node("Expand", ["nc", "shp"], ["ne"], name="expand"),
        helper.make_node("Div", ["b", "ne"], ["bn"], name="div"),
        helper.make_node("Resize", ["bn", "", "scales"], ["r"], name="resize", mode="nearest"),
        helper.make_node("Shape", ["r"], ["rs"], name="shape2"),
        helper.make_node("Cast", ["rs"], ["rsf"], name="castf", to=FLOAT),
        helper.make_node("ReduceMax", ["rsf"], ["m"], name="rmax", keepdims=0),
        helper.make_node("Mul", ["r", "m"], ["rm"], name="mul"),
        helper.make_node("Add", ["rm", "x"], ["y"], name="add"),
    ]
    g = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("x", FLOAT, [1, 4, 8])],
                          [helper.make_tensor_value_info("y", FLOAT, [1, 4, 8])], [w, scale, bias, eps, scales])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.metadata_props.add(key="graph", value="transformer")
    onnx.checker.check_model(m)
    return m


def _types(m: onnx.ModelProto) -> dict[str, int]:
    return {v.name: v.type.tensor_type.elem_type for v in list(m.graph.value_info) + list(m.graph.output)}


def test_islands_of_a_small_graph() -> None:
    m = _tiny()
    isl = precision.find_islands(m.graph)
    names = {m.graph.node[i].name for i in isl.nodes}
    assert names == {"ln", "softmax", "l2", "clip", "expand", "div"}
    assert isl.l2 == 1 and isl.layer_norms == 0
    assert isl.by_op == {"LayerNormalization": 1, "Softmax": 1, "ReduceL2": 1}


def test_mixed_small_graph_types_and_casts() -> None:
    mixed, _ = precision.to_mixed(_tiny(), "ab" * 32)
    ty = _types(mixed)
    by_name = {n.name: n for n in mixed.graph.node}
    out = lambda name: ty[by_name[name].output[0]]  # noqa: E731
    for name in ("ln", "softmax", "l2", "clip", "expand", "div"):
        assert out(name) == FLOAT, name
    for name in ("mm1", "mm2", "mul", "resize"):
        assert out(name) == FLOAT16, name
    # the graph's boundary stays float32
    assert [v.type.tensor_type.elem_type for v in list(mixed.graph.input) + list(mixed.graph.output)] == [FLOAT, FLOAT]
    # the float-only input of Resize stays float32; the float Cast now makes float16
    inits = {t.name: t for t in mixed.graph.initializer}
    assert inits[by_name["resize"].input[2]].data_type == FLOAT
    assert by_name["castf"].attribute[0].i == FLOAT16
    # W feeds float16 matmuls only: one float16 copy under its own name
    assert inits["W"].data_type == FLOAT16 and not any(n.endswith("W__fp16") for n in inits)
    # the layer norm's weights stay float32, and its input is cast to it
    assert inits["scale"].data_type == FLOAT and inits["bias"].data_type == FLOAT
    ln_in = by_name["ln"].input[0]
    assert any(n.op_type == "Cast" and n.output[0] == ln_in for n in mixed.graph.node)
    meta = {p.key: p.value for p in mixed.metadata_props}
    assert meta["precision"] == "fp16" and meta["fp32_source_sha256"] == "ab" * 32 and meta["graph"] == "transformer"
    assert "L2 normalisation 1" in meta["fp32_islands"]
    assert precision.node_types(mixed)["ln"] == FLOAT


def test_simulation_rounds_to_float16() -> None:
    mixed, _ = precision.to_mixed(_tiny())
    sim = precision.simulate(mixed)
    assert all(t.data_type != FLOAT16 for t in sim.graph.initializer)
    ty = _types(sim)
    rounding = [n for n in sim.graph.node if n.op_type == "Cast" and n.attribute[0].i == FLOAT16]
    assert rounding, "no rounding casts"
    # every node that made float16 values in the mixed graph is rounded
    mixed_ty = _types(mixed)
    made16 = {o for n in mixed.graph.node if n.op_type not in precision.EXACT_OPS
              for o in n.output if mixed_ty.get(o) == FLOAT16}
    rounded = {n.input[0].removesuffix("__unrounded").removesuffix("__half") for n in rounding}
    assert made16 <= rounded | {n.output[0].removesuffix("__half") for n in rounding}
    assert ty[sim.graph.output[0].name] == FLOAT
    assert {p.key: p.value for p in sim.metadata_props}["precision"] == "fp16-simulated"


def test_islands_of_a_decomposed_layer_norm() -> None:
    """One layer norm as `export --layernorm decomposed` writes it (names and
    links as in a real export) with its affine tail, and a mean that is not
    a layer norm: the seven nodes of the norm are an island, nothing else."""
    def node(name: str, op: str, ins: list[str], outs: list[str]) -> onnx.NodeProto:
        return helper.make_node(op, ins, outs, name=name)
    nodes = [
        node("/n/ReduceMean", "ReduceMean", ["x"], ["m"]),
        node("/n/Sub", "Sub", ["x", "m"], ["d"]),
        node("/n/Mul", "Mul", ["d", "d"], ["q"]),
        node("/n/ReduceMean_1", "ReduceMean", ["q"], ["v"]),
        node("/n/Add", "Add", ["v", "eps"], ["ve"]),
        node("/n/Sqrt", "Sqrt", ["ve"], ["s"]),
        node("/n/Div", "Div", ["d", "s"], ["y"]),
        node("/n/Mul_1", "Mul", ["y", "w"], ["yw"]),
        node("/n/Add_1", "Add", ["yw", "b"], ["out"]),
        node("/pool/ReduceMean", "ReduceMean", ["out"], ["p"]),
        node("/pool/Sub", "Sub", ["p", "out"], ["r"]),
    ]
    g = helper.make_graph(nodes, "ln", [], [])
    isl = precision.find_islands(g)
    assert isl.layer_norms == 1 and isl.l2 == 0
    assert {g.node[i].name for i in isl.nodes} == {
        "/n/ReduceMean", "/n/Sub", "/n/Mul", "/n/ReduceMean_1", "/n/Add", "/n/Sqrt", "/n/Div"}
    # a broken link (Div by something else) is no layer norm
    g.node[6].input[1] = "ve"
    assert precision.find_islands(g).layer_norms == 0


@pytest.fixture(scope="module")
def s_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One export of the s preset (fused layer norms, --precision fp16, the
    default). The real decomposed export is checked by the Go tests on
    build/models/s-decomposed-ln (make models)."""
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("s")
    assert export.main(["--preset", "s", "--out", str(out)]) == 0
    return out


def test_islands_of_the_export(s_export: Path) -> None:
    g = onnx.load(str(s_export / "transformer.onnx"))
    ops = collections.Counter(n.op_type for n in g.graph.node)
    isl = precision.find_islands(g.graph)
    assert isl.l2 == ops["ReduceL2"] > 0
    assert isl.by_op["LayerNormalization"] == ops["LayerNormalization"] > 0 and isl.layer_norms == 0
    assert len(isl.nodes) == ops["LayerNormalization"] + ops["Softmax"] + 4 * ops["ReduceL2"]
    pinned_ops = {g.graph.node[i].op_type for i in isl.nodes}
    assert not pinned_ops & {"Conv", "MatMul", "Gemm"}, f"heavy layers pinned: {pinned_ops}"


def test_mixed_export_keeps_names_and_pins_islands(s_export: Path) -> None:
    g = onnx.load(str(s_export / "transformer.onnx"))
    mixed = onnx.load(str(s_export / precision.MIXED_FILE))
    isl = precision.find_islands(g.graph)
    types = precision.node_types(mixed)
    # every node of the float32 graph is there under its name (float
    # Constant nodes became initializers)
    mixed_names = {n.name for n in mixed.graph.node}
    missing = [n.name for n in g.graph.node if n.name not in mixed_names and n.op_type != "Constant"]
    assert not missing, missing[:5]
    # what runs in float32 is the islands and the casts, nothing else
    fp32 = {name for name, t in types.items() if t == FLOAT}
    casts = {n.name for n in mixed.graph.node if n.op_type in ("Cast", "Identity")}
    assert fp32 - casts == {g.graph.node[i].name for i in isl.nodes}
    heavy = [n.name for n in mixed.graph.node if n.op_type in ("Conv", "MatMul", "Gemm")]
    assert heavy and all(types[h] == FLOAT16 for h in heavy)
    w16 = sum(t.data_type == FLOAT16 for t in mixed.graph.initializer)
    w32 = sum(numpy_helper.to_array(t).size for t in mixed.graph.initializer if t.data_type == FLOAT)
    assert w16 > 0 and w32 < 5000, (w16, w32)  # float32 weights: the layer norms' and a few constants
    assert [v.type.tensor_type.elem_type for v in list(mixed.graph.input) + list(mixed.graph.output)] == [FLOAT] * 3


def test_export_precision_flag(s_export: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mixed = onnx.load(str(s_export / precision.MIXED_FILE))
    meta = {p.key: p.value for p in mixed.metadata_props}
    assert meta["precision"] == "fp16"
    assert meta["fp32_source_sha256"] == precision.sha256_file(s_export / "transformer.onnx")
    for graph in ("prior", "transformer"):
        m = onnx.load(str(s_export / f"{graph}.onnx"))
        assert {p.key: p.value for p in m.metadata_props}["precision"] == "fp32"
    # --precision fp32 leaves no float16 graph of an earlier export behind
    # (the float32 export itself is the one above: skipped here)
    out = s_export.parent / "fp32"
    out.mkdir()
    (out / precision.MIXED_FILE).write_bytes(b"stale")
    monkeypatch.setattr(export, "export", lambda *a, **k: None)
    assert export.main(["--preset", "s", "--out", str(out), "--precision", "fp32"]) == 0
    assert not (out / precision.MIXED_FILE).exists()


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = tmp_path / "m"
    d.mkdir()
    onnx.save(_tiny(), str(d / "transformer.onnx"))
    assert precision.main(["mixed", str(d)]) == 0
    assert precision.main(["simulate", str(d), str(tmp_path / "sim")]) == 0
    assert (tmp_path / "sim" / precision.SIM_FILE).is_file()
    assert precision.main(["mixed", str(tmp_path / "nowhere")]) == 1
    assert "No such file" in capsys.readouterr().err


def test_peaks(tmp_path: Path) -> None:
    """The diagnostic behind the island list: the L2 norm's peak tops the
    list (it sums over every pixel), sorted largest first."""
    from PIL import Image
    rng = np.random.default_rng(0)
    photo = tmp_path / "p.png"
    Image.fromarray((rng.random((48, 48, 3)) * 255).astype(np.uint8)).save(photo)
    got = precision.peaks("s", photo, 48, None)
    values = [v for _, v in got]
    assert values == sorted(values, reverse=True) and all(np.isfinite(values))
    norm = [v for op, v in got if "norm.ScalarOpt" in op or "vector_norm" in op]
    assert norm and norm[0] == values[0], got[:3]
