package model

import (
	"fmt"
	"strconv"
	"strings"

	"hidiffd/deblur"
)

// File names of the two graphs in a model folder (docs/ARCHITECTURE.md, "ONNX contract"),
// and of the transformer's float16 rewrite (engine_build/precision.py), which
// only strongly typed TensorRT FP16 engines run; ONNX Runtime never loads it.
const (
	PriorFile       = "prior.onnx"
	TransformerFile = "transformer.onnx"
	MixedFile       = "transformer.fp16.onnx"
)

// Placeholders in expected shapes. H and W are dynamic by contract; the
// prior's token and channel counts are whatever the metadata says (16 and 256
// for every released model), so the graphs are only required to agree with
// each other and with the metadata, not with a number written here.
const (
	dimHW       = -1 // an input must leave it dynamic; an output may say anything
	dimTokens   = -2
	dimChannels = -3
)

type tensorSpec struct {
	name string
	dims []int64
}

// graphSpec is one row of the contract table.
type graphSpec struct {
	file   string // file name in the model folder
	graph  string // value of the "graph" metadata key
	inputs []tensorSpec
	output tensorSpec
}

var (
	imageDims = []int64{1, 3, dimHW, dimHW}
	priorDims = []int64{1, dimTokens, dimChannels}

	priorSpec = graphSpec{
		file:   PriorFile,
		graph:  "prior",
		inputs: []tensorSpec{{"blur", imageDims}, {"noise", priorDims}},
		output: tensorSpec{"prior", priorDims},
	}
	transformerSpec = graphSpec{
		file:   TransformerFile,
		graph:  "transformer",
		inputs: []tensorSpec{{"blur", imageDims}, {"prior", priorDims}},
		output: tensorSpec{"sharp", imageDims},
	}
)

// specDims renders an expected shape the way the contract table writes it.
func specDims(dims []int64) string {
	parts := make([]string, len(dims))
	hw := "H"
	for i, d := range dims {
		switch d {
		case dimHW:
			parts[i] = hw
			hw = "W"
		case dimTokens:
			parts[i] = "16"
		case dimChannels:
			parts[i] = "256"
		default:
			parts[i] = strconv.FormatInt(d, 10)
		}
	}
	return "[" + strings.Join(parts, " ") + "]"
}

func describeIO(infos []TensorInfo) string {
	if len(infos) == 0 {
		return "none"
	}
	parts := make([]string, len(infos))
	for i, in := range infos {
		parts[i] = in.String()
	}
	return strings.Join(parts, ", ")
}

// priorShape collects the token and channel counts the graphs declare, so
// that every [1,T,C] tensor in both graphs can be held to the same T and C.
type priorShape struct {
	tokens, channels     int64  // 0 = no graph has said yet (all dynamic so far)
	tokensAt, channelsAt string // which tensor said it
}

// checkIO holds one graph's inputs and outputs, as ONNX Runtime would see
// them, to the contract. Extra outputs are tolerated (only the contract's
// output is fetched); a missing or extra input is not, as ORT could not run
// the graph with the inputs we feed. The error names the file and shows both what the
// graph has and what the contract wants.
func checkIO(spec graphSpec, ins, outs []TensorInfo, ps *priorShape) error {
	err := matchIO(spec, ins, outs, ps)
	if err == nil {
		return nil
	}
	hint := ""
	for _, other := range []graphSpec{priorSpec, transformerSpec} {
		if other.graph != spec.graph && matchIO(other, ins, outs, &priorShape{}) == nil {
			hint = fmt.Sprintf(" (this looks like %s: files swapped?)", other.file)
		}
	}
	return fmt.Errorf("%s: %w; the graph has inputs %s and outputs %s; the contract wants inputs %s and output %s%s",
		spec.file, err, describeIO(ins), describeIO(outs), describeSpec(spec.inputs), describeSpec([]tensorSpec{spec.output}), hint)
}

// matchIO is checkIO without the context in the message.
func matchIO(spec graphSpec, ins, outs []TensorInfo, ps *priorShape) error {
	fail := fmt.Errorf
	byName := func(infos []TensorInfo, name string) *TensorInfo {
		for i := range infos {
			if infos[i].Name == name {
				return &infos[i]
			}
		}
		return nil
	}
	for _, want := range spec.inputs {
		if byName(ins, want.name) == nil {
			return fail("input %q missing", want.name)
		}
	}
	for _, in := range ins {
		found := false
		for _, want := range spec.inputs {
			found = found || in.Name == want.name
		}
		if !found {
			return fail("unexpected input %q", in.Name)
		}
	}
	if byName(outs, spec.output.name) == nil {
		return fail("output %q missing", spec.output.name)
	}
	check := func(kind string, want tensorSpec, got *TensorInfo, input bool) error {
		if got.Kind != KindTensor {
			return fail("%s %q is a %s, expected a tensor", kind, want.name, got.Kind)
		}
		if got.Elem != ElemFloat {
			return fail("%s %q has element type %s, expected float32", kind, want.name, elemName(got.Elem))
		}
		bad := func(why string) error {
			return fail("%s %q has shape %s, expected %s (%s)", kind, want.name, gotDims(got.Dims), specDims(want.dims), why)
		}
		if len(got.Dims) != len(want.dims) {
			return bad(fmt.Sprintf("rank %d, expected %d", len(got.Dims), len(want.dims)))
		}
		for i, w := range want.dims {
			g := got.Dims[i]
			switch w {
			case dimHW:
				if input && g >= 0 {
					return bad(fmt.Sprintf("dimension %d is fixed at %d; H and W must be dynamic", i, g))
				}
			case dimTokens, dimChannels:
				if g < 0 {
					continue // dynamic: checked per call instead
				}
				seen, at, what := &ps.tokens, &ps.tokensAt, "token count"
				if w == dimChannels {
					seen, at, what = &ps.channels, &ps.channelsAt, "channel count"
				}
				if *seen != 0 && *seen != g {
					return bad(fmt.Sprintf("prior %s %d disagrees with %d in %s", what, g, *seen, *at))
				}
				if *seen == 0 {
					*seen, *at = g, fmt.Sprintf("%s %q", spec.file, want.name)
				}
			default:
				// A dynamic batch dimension is harmless: we always feed 1.
				if g >= 0 && g != w {
					return bad(fmt.Sprintf("dimension %d is %d, expected %d", i, g, w))
				}
			}
		}
		return nil
	}
	for _, want := range spec.inputs {
		if err := check("input", want, byName(ins, want.name), true); err != nil {
			return err
		}
	}
	return check("output", spec.output, byName(outs, spec.output.name), false)
}

func describeSpec(specs []tensorSpec) string {
	parts := make([]string, len(specs))
	for i, s := range specs {
		parts[i] = fmt.Sprintf("%s %s float32", s.name, specDims(s.dims))
	}
	return strings.Join(parts, ", ")
}

// Metadata keys written by the exporter (engine_build).
const (
	keyModel         = "model"
	keyVersion       = "version"
	keyPreset        = "preset"
	keyTimesteps     = "timesteps"
	keyPadMultiple   = "pad_multiple"
	keyPriorTokens   = "prior_tokens"
	keyPriorChannels = "prior_channels"
	keyWeightsSHA256 = "weights_sha256"
	keyTrainingData  = "training_data"
	keyGraph         = "graph"
	// the float16 graph's (engine_build/precision.py)
	keyPrecision    = "precision"
	keySourceSHA256 = "fp32_source_sha256"
	keyIslands      = "fp32_islands"
)

// Contract values used when a graph neither declares them in metadata nor
// fixes them in its shapes.
const (
	defaultPriorTokens   = 16
	defaultPriorChannels = 256
)

// graphMeta is one graph's metadata_props.
type graphMeta struct {
	file string
	kv   map[string]string
}

func (m graphMeta) str(key string) string { return strings.TrimSpace(m.kv[key]) }

// positive parses a positive integer key; 0 means absent. A required absent
// key, or any unparsable value, is an error naming the file and key.
func (m graphMeta) positive(key string, required bool) (int, error) {
	s, ok := m.kv[key]
	if !ok {
		if required {
			return 0, fmt.Errorf("%s: metadata key %q missing (re-export the model with engine_build)", m.file, key)
		}
		return 0, nil
	}
	v, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil || v <= 0 {
		return 0, fmt.Errorf("%s: metadata key %q = %q, expected a positive integer", m.file, key, s)
	}
	return v, nil
}

// modelInfo merges the two graphs' metadata into one ModelInfo and checks
// that they come from one export. ps carries what the graph shapes said about
// the prior's size.
func modelInfo(pm, tm graphMeta, ps priorShape) (deblur.ModelInfo, error) {
	var info deblur.ModelInfo
	type parsed struct {
		timesteps, pad   int
		tokens, channels int
	}
	var per [2]parsed
	for i, g := range []struct {
		m    graphMeta
		spec graphSpec
	}{{pm, priorSpec}, {tm, transformerSpec}} {
		m := g.m
		if gr, ok := m.kv[keyGraph]; ok && strings.TrimSpace(gr) != g.spec.graph {
			return info, fmt.Errorf("%s: metadata %q = %q, expected %q (files swapped?)", m.file, keyGraph, gr, g.spec.graph)
		}
		if m.str(keyPreset) == "" {
			return info, fmt.Errorf("%s: metadata key %q missing or empty (re-export the model with engine_build)", m.file, keyPreset)
		}
		var err error
		p := &per[i]
		if p.timesteps, err = m.positive(keyTimesteps, true); err != nil {
			return info, err
		}
		if p.pad, err = m.positive(keyPadMultiple, true); err != nil {
			return info, err
		}
		if p.tokens, err = m.positive(keyPriorTokens, false); err != nil {
			return info, err
		}
		if p.channels, err = m.positive(keyPriorChannels, false); err != nil {
			return info, err
		}
	}
	if a, b := pm.str(keyPreset), tm.str(keyPreset); a != b {
		return info, fmt.Errorf("%s says preset %q but %s says %q: the two graphs come from different exports", pm.file, a, tm.file, b)
	}
	if a, b := pm.str(keyWeightsSHA256), tm.str(keyWeightsSHA256); a != b {
		return info, fmt.Errorf("%s has weights_sha256 %q but %s has %q: the two graphs come from different weights", pm.file, a, tm.file, b)
	}

	// The prior's size: metadata first, then the graphs' fixed shapes, then
	// the contract's 16 x 256. Every source that speaks must agree.
	pick := func(key string, a, b int, shape int64, shapeAt string, def int) (int, error) {
		v, vWhere := 0, ""
		for _, c := range []struct {
			v     int
			where string
		}{{a, pm.file + " metadata"}, {b, tm.file + " metadata"}, {int(shape), shapeAt + " shape"}} {
			if c.v == 0 {
				continue
			}
			if v != 0 && c.v != v {
				return 0, fmt.Errorf("%s is %d in %s but %d in %s", key, v, vWhere, c.v, c.where)
			}
			v, vWhere = c.v, c.where
		}
		if v == 0 {
			v = def
		}
		return v, nil
	}
	var err error
	if info.PriorTokens, err = pick(keyPriorTokens, per[0].tokens, per[1].tokens, ps.tokens, ps.tokensAt, defaultPriorTokens); err != nil {
		return info, err
	}
	if info.PriorChannels, err = pick(keyPriorChannels, per[0].channels, per[1].channels, ps.channels, ps.channelsAt, defaultPriorChannels); err != nil {
		return info, err
	}

	first := func(key string) string {
		if v := pm.str(key); v != "" {
			return v
		}
		return tm.str(key)
	}
	info.Model = first(keyModel)
	info.Version = first(keyVersion)
	info.Preset = pm.str(keyPreset)
	// T is baked into the prior graph; the transformer's copy is informative.
	info.Timesteps = per[0].timesteps
	// Inputs must satisfy both graphs; the exporter writes the same value to
	// both, and the least common multiple is right even if it did not.
	info.PadMultiple = lcm(per[0].pad, per[1].pad)
	info.WeightsSHA256 = pm.str(keyWeightsSHA256)
	info.TrainingData = first(keyTrainingData)
	return info, nil
}

func lcm(a, b int) int {
	x, y := a, b
	for y != 0 {
		x, y = y, x%y
	}
	return a / x * b
}
