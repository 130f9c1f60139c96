"""Mixed precision: the one list of FP32 islands, the float16 rewrite of the
transformer graph, and the float16 rounding simulation.

    python3 -m engine_build.precision mixed MODEL_DIR
    python3 -m engine_build.precision simulate MODEL_DIR OUT_DIR
    python3 -m engine_build.precision peaks --preset P [--weights-pt FILE] [--size N] PHOTO

TensorRT 10 and 11 build strongly typed networks: every tensor runs in the
type the ONNX file gives it. So FP16 with FP32 islands is written here, into
the graph, as `transformer.fp16.onnx` beside the float32 `transformer.onnx`
it is rewritten from (ONNX Runtime and FP32 engines keep using that one):

- every float32 weight and activation becomes float16, except
- the FP32 islands (`find_islands`): every LayerNormalization and Softmax,
  the L2 normalisation of channel attention (ReduceL2 -> Clip -> Expand ->
  Div, as PyTorch exports F.normalize), and the layer norms of the
  `--layernorm decomposed` export (ReduceMean -> Sub -> Mul -> ReduceMean ->
  Add -> Sqrt -> Div). Their inputs are cast to float32 by explicit Cast
  nodes and their outputs cast back;
- the graph inputs and output stay float32 (Cast nodes right after and
  right before), so the ONNX contract does not change.

Node names are kept: a node of the float32 graph has the same name in the
float16 one. That is what lets trt/recipe.go pin, for TensorRT 8.x (weakly
typed, built from the float32 graph), exactly the nodes that run in float32
here: it reads the float16 graph's own types (value_info) instead of
keeping a second list of islands. This module is the only list.

Why these islands: the L2 norms of channel attention sum squares over every
pixel of a tile (a norm of 657 for the trained `s` at 384x384, a sum of
squares of 4.3e5, past float16's 65504; it grows with the tile), the
layer-norm variance likewise sums squares, and softmax exponentiates. No
other op comes near float16's range (`peaks`, the largest |value| each
PyTorch op writes, on a SUN photograph: outside the islands at most 105 for
the trained `s` (the shipped weights, `git show 2795f89:training/s/weights.pt`) at 384x384, 59 for the random-weight
`gopro` at 256x256, both a layer norm's output), and the float16 rounding
simulation of ort/fp16_test.go finds no inf on real photographs.

`simulate` turns the float16 graph back into a float32 graph that rounds
every float16 tensor to float16 (a Cast pair after each node): ONNX Runtime's
CPU provider has float16 kernels for few ops and runs the others through
inserted casts, so running the float16 graph there says little about
overflow; the simulation rounds every activation, on any runtime.
"""
from __future__ import annotations

import argparse
import hashlib
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

FP32_FILE = "transformer.onnx"
MIXED_FILE = "transformer.fp16.onnx"
SIM_FILE = "transformer.fp16sim.onnx"

# Metadata keys the rewrite adds (the Go side reads them: model/inspect.go).
KEY_PRECISION = "precision"
KEY_SOURCE = "fp32_source_sha256"
KEY_ISLANDS = "fp32_islands"
KEY_SIMULATION = "simulation"

# --- the FP32 islands ---------------------------------------------------------

# Ops kept in float32 wherever they appear.
FP32_OPS = frozenset({
    "LayerNormalization",
    "Softmax",
    "LpNormalization",  # the single-node form of an L2 normalisation
    "ReduceL2",
    "ReduceSumSquare",
})
# Ops that may sit between ReduceL2 and the Div that applies the norm.
L2_CHAIN = frozenset({"Clip", "Max", "Expand", "Add", "Unsqueeze", "Reshape"})

FLOAT = TensorProto.FLOAT
FLOAT16 = TensorProto.FLOAT16


@dataclass
class Islands:
    """The nodes (indexes into graph.node) that stay float32, and what they are."""
    nodes: set[int] = field(default_factory=set)
    l2: int = 0                # L2 normalisations recognised whole (ReduceL2 .. Div)
    layer_norms: int = 0       # decomposed layer norms recognised whole
    by_op: dict[str, int] = field(default_factory=dict)  # FP32_OPS found

    def summary(self) -> str:
        parts = [f"{op} {n}" for op, n in sorted(self.by_op.items())]
        parts.append(f"L2 normalisation {self.l2}")
        parts.append(f"decomposed layer norm {self.layer_norms}")
        return ", ".join(parts)


def _consumers(nodes: list[onnx.NodeProto]) -> dict[str, list[int]]:
    c: dict[str, list[int]] = {}
    for i, n in enumerate(nodes):
        for t in n.input:
            if t:
                c.setdefault(t, []).append(i)
    return c


def _decomposed_layer_norm(nodes: list[onnx.NodeProto], consumers: dict[str, list[int]], r: int) -> list[int]:
    """The seven nodes of the decomposed layer norm starting at the
    ReduceMean nodes[r] (m = mean(x); d = x - m; v = mean(d*d);
    y = d / sqrt(v + eps)), or [] if nodes[r] starts none. Later stages may
    be shared with another norm of the same input (the exporter merges equal
    subexpressions): only the links are checked."""

    def find(t: str, op: str, *ins: str) -> int:
        for j in consumers.get(t, []):
            n = nodes[j]
            if n.op_type != op or len(n.input) != len(ins) or not n.output:
                continue
            if all(want == "*" or n.input[k] == (want or t) for k, want in enumerate(ins)):
                return j
        return -1

    mean = nodes[r]
    if not mean.input or not mean.output:
        return []
    x = mean.input[0]
    sub = find(mean.output[0], "Sub", x, "")
    if sub < 0:
        return []
    d = nodes[sub].output[0]
    sq = find(d, "Mul", "", "")
    if sq < 0:
        return []
    var = find(nodes[sq].output[0], "ReduceMean", "")
    if var < 0:
        return []
    eps = find(nodes[var].output[0], "Add", "", "*")
    if eps < 0:
        return []
    sqrt = find(nodes[eps].output[0], "Sqrt", "")
    if sqrt < 0:
        return []
    div = find(nodes[sqrt].output[0], "Div", d, "")
    if div < 0:
        return []
    return [r, sub, sq, var, eps, sqrt, div]


def find_islands(graph: onnx.GraphProto) -> Islands:
    """The FP32 islands of a float32 graph (see the module doc)."""
    nodes = list(graph.node)
    consumers = _consumers(nodes)
    isl = Islands()
    for i, n in enumerate(nodes):
        if n.op_type == "ReduceMean":
            chain = _decomposed_layer_norm(nodes, consumers, i)
            if chain:
                isl.nodes.update(chain)
                isl.layer_norms += 1
    for i, n in enumerate(nodes):
        if n.op_type not in FP32_OPS:
            continue
        isl.nodes.add(i)
        isl.by_op[n.op_type] = isl.by_op.get(n.op_type, 0) + 1
        if n.op_type != "ReduceL2" or not n.output:
            continue
        # Walk the norm forward through the eps clamp and the broadcast to
        # the Div that applies it, along single-consumer links only: the
        # chain is private to one normalisation.
        t, chain = n.output[0], []
        for _ in range(8):
            nxt = consumers.get(t, [])
            if len(nxt) != 1:
                break
            m = nodes[nxt[0]]
            if m.op_type == "Div" and len(m.input) == 2 and m.input[1] == t:
                isl.nodes.update(chain)
                isl.nodes.add(nxt[0])
                isl.l2 += 1
                break
            if m.op_type not in L2_CHAIN or not m.output:
                break
            chain.append(nxt[0])
            t = m.output[0]
    return isl


# --- float32 -> float16 with islands ------------------------------------------

class PrecisionError(Exception):
    pass


def _opset(model: onnx.ModelProto) -> int:
    for o in model.opset_import:
        if o.domain in ("", "ai.onnx"):
            return int(o.version)
    raise PrecisionError("the model imports no default-domain opset")


def _elem_types(model: onnx.ModelProto) -> dict[str, int]:
    """Element type of every tensor of the graph (ONNX type inference)."""
    inferred = onnx.shape_inference.infer_shapes(model)
    g = inferred.graph
    types: dict[str, int] = {}
    for v in list(g.input) + list(g.output) + list(g.value_info):
        if v.type.HasField("tensor_type"):
            types[v.name] = v.type.tensor_type.elem_type
    for t in g.initializer:
        types[t.name] = t.data_type
    for n in g.node:
        if n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value":
                    types[n.output[0]] = a.t.data_type
    return types


def _input_wants(schema: onnx.defs.OpSchema, k: int, compute: int) -> int:
    """The float type input k of a node computing in `compute` must have:
    compute where the op's type constraint allows float16, else float32
    (inputs fixed to float, such as Resize's scales)."""
    formal = schema.inputs[min(k, len(schema.inputs) - 1)]
    allowed = {c.type_param_str: c.allowed_type_strs for c in schema.type_constraints}
    types = allowed.get(formal.typeStr, [formal.typeStr])
    return compute if "tensor(float16)" in types else FLOAT


def _fp16_array(name: str, a: np.ndarray) -> np.ndarray:
    h = a.astype(np.float16)
    if not np.isfinite(h[np.isfinite(a)]).all():
        raise PrecisionError(f"weight {name}: values beyond float16's range ({np.abs(a).max():.3g})")
    return h


def to_mixed(model: onnx.ModelProto, source_sha256: str = "") -> tuple[onnx.ModelProto, Islands]:
    """The float16 graph with float32 islands, rewritten from a float32
    graph (see the module doc); node names are kept."""
    g = model.graph
    opset = _opset(model)
    types = _elem_types(model)
    islands = find_islands(g)

    inits = {t.name: t for t in g.initializer}
    # Float constants of Constant nodes are weights like any other.
    consts: dict[str, np.ndarray] = {}
    for t in g.initializer:
        if t.data_type == FLOAT:
            consts[t.name] = numpy_helper.to_array(t)
    for n in g.node:
        if n.op_type == "Constant" and len(n.attribute) == 1 and n.attribute[0].name == "value" \
                and n.attribute[0].t.data_type == FLOAT:
            consts[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)

    new_nodes: list[onnx.NodeProto] = []
    new_inits: list[TensorProto] = [t for t in g.initializer if t.data_type != FLOAT]
    made: dict[tuple[str, int], str] = {}  # (tensor, type) -> name of that version

    def version(t: str, want: int) -> str:
        key = (t, want)
        if key in made:
            return made[key]
        if t in consts:
            suffix = "" if want == FLOAT else "__fp16"
            arr = consts[t] if want == FLOAT else _fp16_array(t, consts[t])
            name = t + suffix
            new_inits.append(numpy_helper.from_array(arr, name))
            made[key] = name
            return name
        have = made.get((t, FLOAT16 if want == FLOAT else FLOAT))
        if have is None:
            raise PrecisionError(f"tensor {t!r} is used before it is made (graph not in topological order?)")
        name = f"{t}__{'fp32' if want == FLOAT else 'fp16'}"
        new_nodes.append(helper.make_node("Cast", [have], [name], name=f"{name}__cast", to=want))
        made[key] = name
        return name

    for v in g.input:
        if types.get(v.name) == FLOAT:
            made[(v.name, FLOAT)] = v.name
    outputs = {o.name for o in g.output}

    for i, n in enumerate(g.node):
        if n.op_type == "Constant" and n.output[0] in consts:
            continue  # made on demand, in the type each consumer wants
        compute = FLOAT if i in islands.nodes else FLOAT16
        schema = onnx.defs.get_schema(n.op_type, opset, n.domain)
        m = onnx.NodeProto()
        m.CopyFrom(n)
        for k, t in enumerate(n.input):
            if t and types.get(t) == FLOAT:
                m.input[k] = version(t, _input_wants(schema, k, compute))
        if n.op_type == "Cast":
            to = helper.get_attribute_value(n.attribute[0])
            if to == FLOAT and compute == FLOAT16:
                m.attribute[0].i = FLOAT16
        elif n.op_type == "ConstantOfShape" and compute == FLOAT16:
            for a in m.attribute:
                if a.name == "value" and a.t.data_type == FLOAT:
                    a.t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(a.t).astype(np.float16)))
        for k, o in enumerate(n.output):
            if types.get(o) != FLOAT:
                continue
            if o in outputs:
                # The graph output keeps its name and float32: the node
                # writes a private tensor, cast (or passed) on below.
                m.output[k] = f"{o}__{'fp32' if compute == FLOAT else 'fp16'}"
            made[(o, compute)] = m.output[k]
        new_nodes.append(m)

    for o in g.output:
        if types.get(o.name) != FLOAT:
            continue
        if (o.name, FLOAT) in made:
            new_nodes.append(helper.make_node("Identity", [made[(o.name, FLOAT)]], [o.name], name=f"{o.name}__out"))
        else:
            new_nodes.append(helper.make_node("Cast", [made[(o.name, FLOAT16)]], [o.name],
                                              name=f"{o.name}__out", to=FLOAT))

    out = onnx.ModelProto()
    out.CopyFrom(model)
    del out.graph.node[:]
    out.graph.node.extend(new_nodes)
    used = {t for n in new_nodes for t in n.input}
    del out.graph.initializer[:]
    out.graph.initializer.extend(t for t in new_inits if t.name in used)
    del out.graph.value_info[:]
    _rename_fp16_weights(out.graph)
    meta = {p.key: p.value for p in model.metadata_props}
    meta.update({KEY_PRECISION: "fp16", KEY_ISLANDS: islands.summary()})
    if source_sha256:
        meta[KEY_SOURCE] = source_sha256
    del out.metadata_props[:]
    for k, v in meta.items():
        out.metadata_props.add(key=k, value=v)
    out = onnx.shape_inference.infer_shapes(out, strict_mode=True)
    _check_types(out)
    onnx.checker.check_model(out)
    return out, islands


def _rename_fp16_weights(g: onnx.GraphProto) -> None:
    """A weight used only in float16 takes back its own name (readable
    graphs, and TensorRT refit names that match the float32 export)."""
    names = {t.name for t in g.initializer}
    ren = {t.name: t.name[:-len("__fp16")] for t in g.initializer
           if t.name.endswith("__fp16") and t.name[:-len("__fp16")] not in names}
    for t in g.initializer:
        if t.name in ren:
            t.name = ren[t.name]
    for n in g.node:
        for k, t in enumerate(n.input):
            if t in ren:
                n.input[k] = ren[t]


def _check_types(model: onnx.ModelProto) -> None:
    """Every node output has an inferred type (the Go recipe reads them),
    and the graph's inputs and outputs are float32."""
    g = model.graph
    known = {v.name for v in list(g.value_info) + list(g.output)}
    for n in g.node:
        for o in n.output:
            if o and o not in known:
                raise PrecisionError(f"node {n.name} ({n.op_type}): no type inferred for {o}")
    for v in list(g.input) + list(g.output):
        if v.type.tensor_type.elem_type != FLOAT:
            raise PrecisionError(f"graph {('input', 'output')[v in g.output]} {v.name} is not float32")


def node_types(model: onnx.ModelProto) -> dict[str, int]:
    """Element type of each node's first float output, by node name."""
    types = {v.name: v.type.tensor_type.elem_type for v in list(model.graph.value_info) + list(model.graph.output)}
    out: dict[str, int] = {}
    for n in model.graph.node:
        for o in n.output:
            if types.get(o) in (FLOAT, FLOAT16):
                out[n.name] = types[o]
                break
    return out


# --- simulation ---------------------------------------------------------------

# Ops that only move, pick or copy values: their float16 outputs are float16
# values already, so the simulation need not round them (fewer nodes, and
# ONNX Runtime builds its session faster).
EXACT_OPS = frozenset({"Reshape", "Transpose", "Slice", "Split", "Concat", "Unsqueeze", "Squeeze", "Flatten",
                       "Expand", "Gather", "Identity", "Tile", "DepthToSpace", "SpaceToDepth"})


def simulate(mixed: onnx.ModelProto) -> onnx.ModelProto:
    """A float32 graph computing what the float16 graph computes, with every
    float16 tensor rounded to float16 (a Cast to float16 and back after each
    node that makes new values; float16 weights become float32 of the same
    value): float32 arithmetic inside each op, float16 storage between ops,
    on any runtime. A value past float16's range becomes inf where it is
    rounded, so overflow shows. Run it without graph optimisations that
    could fuse the Cast pairs away (ONNX Runtime's basic and extended
    levels keep them: ort/fp16_test.go)."""
    g = mixed.graph
    types = {v.name: v.type.tensor_type.elem_type for v in list(g.value_info) + list(g.output) + list(g.input)}
    out = onnx.ModelProto()
    out.CopyFrom(mixed)
    og = out.graph
    del og.node[:]
    del og.initializer[:]
    for t in g.initializer:
        if t.data_type == FLOAT16:
            og.initializer.append(numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float32), t.name))
        else:
            og.initializer.append(t)
    for n in g.node:
        m = onnx.NodeProto()
        m.CopyFrom(n)
        for a in m.attribute:
            if a.type == onnx.AttributeProto.TENSOR and a.t.data_type == FLOAT16:
                a.t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(a.t).astype(np.float32), a.t.name))
        if n.op_type == "Cast" and helper.get_attribute_value(n.attribute[0]) == FLOAT16:
            # the cast itself rounds; one more back to float32
            m.output[0] = n.output[0] + "__half"
            og.node.extend([m, helper.make_node("Cast", [m.output[0]], [n.output[0]],
                                                name=n.output[0] + "__round32", to=FLOAT)])
            continue
        rounds = []
        if n.op_type not in EXACT_OPS:
            for k, o in enumerate(n.output):
                if types.get(o) == FLOAT16:
                    m.output[k] = o + "__unrounded"
                    rounds.append((m.output[k], o))
        og.node.append(m)
        for raw, o in rounds:
            og.node.append(helper.make_node("Cast", [raw], [o + "__half"], name=o + "__round16", to=FLOAT16))
            og.node.append(helper.make_node("Cast", [o + "__half"], [o], name=o + "__round32", to=FLOAT))
    del og.value_info[:]
    meta = {p.key: p.value for p in mixed.metadata_props}
    meta[KEY_PRECISION] = "fp16-simulated"
    meta[KEY_SIMULATION] = "float32 arithmetic; every float16 tensor of transformer.fp16.onnx rounded to float16"
    del out.metadata_props[:]
    for k, v in meta.items():
        out.metadata_props.add(key=k, value=v)
    out = onnx.shape_inference.infer_shapes(out, strict_mode=True)
    onnx.checker.check_model(out)
    return out


# --- files ---------------------------------------------------------------------

def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _save(model: onnx.ModelProto, path: Path) -> None:
    tmp = path.with_suffix(".onnx.tmp")
    onnx.save(model, str(tmp))
    tmp.replace(path)


def write_mixed(model_dir: Path) -> Islands:
    """MODEL_DIR/transformer.fp16.onnx from MODEL_DIR/transformer.onnx."""
    src = model_dir / FP32_FILE
    mixed, islands = to_mixed(onnx.load(str(src)), sha256_file(src))
    _save(mixed, model_dir / MIXED_FILE)
    return islands


def write_simulation(model_dir: Path, out_dir: Path) -> None:
    """OUT_DIR/transformer.fp16sim.onnx from MODEL_DIR/transformer.fp16.onnx."""
    out_dir.mkdir(parents=True, exist_ok=True)
    _save(simulate(onnx.load(str(model_dir / MIXED_FILE))), out_dir / SIM_FILE)


def peaks(preset: str, photo: Path, size: int, weights_pt: str | None) -> list[tuple[str, float]]:
    """The largest |value| each PyTorch op writes while the transformer runs
    on a size x size crop of photo, largest first (float32, one thread)."""
    import torch  # only here: the rest of this module needs onnx alone
    from PIL import Image
    from torch.utils._python_dispatch import TorchDispatchMode

    from . import presets
    from .checkpoints import load_pickle
    from .model import build
    from .noise import prior_noise

    torch.set_num_threads(1)
    m = build(presets.get(preset), 0).eval()
    if weights_pt:
        m.load_state_dict(load_pickle(Path(weights_pt))["model"])
    a = np.asarray(Image.open(photo).convert("RGB"), dtype=np.float32)[:size, :size] / 255
    blur = torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1)[None]))
    noise = prior_noise(1)
    peak: dict[str, float] = {}

    class Peaks(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
            out = func(*args, **(kwargs or {}))
            for o in out if isinstance(out, (tuple, list)) else [out]:
                if isinstance(o, torch.Tensor) and o.is_floating_point() and o.numel():
                    peak[str(func)] = max(peak.get(str(func), 0.0), float(o.abs().max()))
            return out

    with torch.no_grad():
        prior = m.prior(blur, noise)
        with Peaks():
            m.transformer(blur, prior)
    return sorted(peak.items(), key=lambda kv: -kv[1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python3 -m engine_build.precision", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    mx = sub.add_parser("mixed", help=f"write MODEL_DIR/{MIXED_FILE} from MODEL_DIR/{FP32_FILE}")
    mx.add_argument("model_dir")
    sm = sub.add_parser("simulate", help=f"write OUT_DIR/{SIM_FILE} from MODEL_DIR/{MIXED_FILE} (for tests)")
    sm.add_argument("model_dir")
    sm.add_argument("out_dir")
    pk = sub.add_parser("peaks", help="the largest |value| each PyTorch op of the transformer writes on a photo")
    pk.add_argument("--preset", required=True)
    pk.add_argument("--weights-pt", help="a training weights.pt (default: seeded random weights)")
    pk.add_argument("--size", type=int, default=256, help="crop edge in pixels")
    pk.add_argument("photo")
    a = ap.parse_args(argv)
    if a.cmd == "peaks":
        for op, v in peaks(a.preset, Path(a.photo), a.size, a.weights_pt)[:12]:
            print(f"{v:12.1f}  {op}")
        return 0
    d = Path(a.model_dir)
    try:
        if a.cmd == "mixed":
            isl = write_mixed(d)
            print(f"precision: {d / MIXED_FILE}: float16 with float32 islands ({isl.summary()})")
        else:
            write_simulation(d, Path(a.out_dir))
            print(f"precision: {Path(a.out_dir) / SIM_FILE}: float16 rounding simulation of {d / MIXED_FILE}")
    except (OSError, PrecisionError, onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:
        print(f"precision: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
