package trt

import (
	"fmt"
	"sort"

	"hidiffd/ort"
)

// FP16 hazards of this model family (DESIGN.md, "ONNX contract"): the
// layer-norm variance and the L2 normalisation inside channel attention sum
// over every pixel of a tile, and their intermediate sums overflow FP16's
// 65504 long before the result would; softmax exponentiates. The builder
// keeps those in FP32 and lets everything else (convolutions, matrix
// products: the bulk of the time) run in FP16.
//
// LayerNormalization and Softmax become TensorRT layers of their own type
// (kNORMALIZATION since 8.6, kSOFTMAX), which the shim pins by type. The L2
// normalisation has no layer type: PyTorch exports F.normalize(x, dim=-1)
// as
//
//	n = ReduceL2(x); c = Clip(n, eps) (or Max); e = Expand(c, Shape(x)); y = Div(x, e)
//
// and TensorRT's parser turns ReduceL2 into square, sum and square-root
// layers named after the node. FP32Nodes finds that pattern in the graph
// and returns the node names (and their output tensor names) for the shim
// to pin; LayerNormalization and Softmax nodes are listed as well so the
// pins do not depend on the parser's layer types alone.
//
// TensorRT before 8.6 (JetPack 5) cannot parse LayerNormalization at all;
// for it the model is exported with `--layernorm decomposed`:
//
//	m = ReduceMean(x); d = Sub(x, m); v = ReduceMean(Mul(d, d)); y = Div(d, Sqrt(Add(v, eps)))
//
// FP32Nodes finds that chain too and pins all seven nodes.

// fp32Ops are pinned wherever they appear.
var fp32Ops = map[string]bool{
	"LayerNormalization": true,
	"Softmax":            true,
	"LpNormalization":    true, // the single-node form of an L2 normalisation
	"ReduceL2":           true,
	"ReduceSumSquare":    true,
}

// l2Chain are the ops that may sit between ReduceL2 and its Div.
var l2Chain = map[string]bool{"Clip": true, "Max": true, "Expand": true, "Add": true, "Unsqueeze": true, "Reshape": true}

// FP32Nodes returns the sorted names of the nodes to keep in FP32 and of
// their output tensors, and how many L2 normalisations and decomposed layer
// norms it recognised.
func FP32Nodes(nodes []ort.Node) (names []string, l2, layerNorms int) {
	consumers := map[string][]int{} // tensor name -> nodes reading it
	for i, n := range nodes {
		for _, in := range n.Inputs {
			consumers[in] = append(consumers[in], i)
		}
	}
	pin := map[int]bool{}
	for i, n := range nodes {
		if n.OpType == "ReduceMean" {
			if chain := decomposedLayerNorm(nodes, consumers, i); chain != nil {
				for _, j := range chain {
					pin[j] = true
				}
				layerNorms++
			}
		}
	}
	for i, n := range nodes {
		if !fp32Ops[n.OpType] {
			continue
		}
		pin[i] = true
		if n.OpType != "ReduceL2" || len(n.Outputs) == 0 {
			continue
		}
		// Walk the norm's tensor forward through the eps clamp and the
		// broadcast to the Div that applies it. Only single-consumer links
		// are followed: the chain is private to one normalisation.
		t, chain := n.Outputs[0], []int{}
		for steps := 0; steps < 8; steps++ {
			next := consumers[t]
			if len(next) != 1 {
				break
			}
			j := next[0]
			m := nodes[j]
			if m.OpType == "Div" && len(m.Inputs) == 2 && m.Inputs[1] == t {
				for _, k := range chain {
					pin[k] = true
				}
				pin[j] = true
				l2++
				break
			}
			if !l2Chain[m.OpType] || len(m.Outputs) == 0 {
				break
			}
			chain = append(chain, j)
			t = m.Outputs[0]
		}
	}
	set := map[string]bool{}
	for i := range pin {
		set[nodes[i].Name] = true
		for _, o := range nodes[i].Outputs {
			set[o] = true
		}
	}
	delete(set, "")
	for s := range set {
		names = append(names, s)
	}
	sort.Strings(names)
	return names, l2, layerNorms
}

// decomposedLayerNorm returns the seven nodes of the layer norm whose first
// ReduceMean is nodes[r] (see above), or nil if nodes[r] does not start one.
// Later stages may be shared with another norm of the same input (the
// exporter merges equal subexpressions): only the links are checked.
func decomposedLayerNorm(nodes []ort.Node, consumers map[string][]int, r int) []int {
	// the consumer of tensor t with op type op and inputs ins ("" = t)
	find := func(t, op string, ins ...string) int {
		for _, j := range consumers[t] {
			n := nodes[j]
			if n.OpType != op || len(n.Inputs) != len(ins) || len(n.Outputs) == 0 {
				continue
			}
			match := true
			for k, in := range ins {
				if in == "" {
					in = t
				}
				if in != "*" && n.Inputs[k] != in {
					match = false
				}
			}
			if match {
				return j
			}
		}
		return -1
	}
	out := func(j int) string { return nodes[j].Outputs[0] }
	mean := nodes[r]
	if len(mean.Inputs) == 0 || len(mean.Outputs) == 0 {
		return nil
	}
	x := mean.Inputs[0]
	sub := find(out(r), "Sub", x, "")
	if sub < 0 {
		return nil
	}
	d := out(sub)
	sq := find(d, "Mul", "", "")
	if sq < 0 {
		return nil
	}
	variance := find(out(sq), "ReduceMean", "")
	if variance < 0 {
		return nil
	}
	eps := find(out(variance), "Add", "", "*")
	if eps < 0 {
		return nil
	}
	sqrt := find(out(eps), "Sqrt", "")
	if sqrt < 0 {
		return nil
	}
	div := find(out(sqrt), "Div", d, "")
	if div < 0 {
		return nil
	}
	return []int{r, sub, sq, variance, eps, sqrt, div}
}

// CheckParsable refuses, before minutes of building, a graph that TensorRT
// version (DeviceInfo.TensorRT, "8.5.2") cannot parse: LayerNormalization
// has an ONNX importer only since 8.6.
func CheckParsable(version, path string, nodes []ort.Node) error {
	var major, minor int
	if _, err := fmt.Sscanf(version, "%d.%d", &major, &minor); err != nil || major > 8 || (major == 8 && minor >= 6) {
		return nil
	}
	for _, n := range nodes {
		if n.OpType == "LayerNormalization" {
			return fmt.Errorf("%s: TensorRT %s cannot parse ONNX LayerNormalization (%s; TensorRT 8.6 and later can): "+
				"export the model with `python3 -m engine_build.export ... --layernorm decomposed`, "+
				"or run it on ONNX Runtime (backend.kind = \"onnxruntime\")", path, version, n.Name)
		}
	}
	return nil
}
