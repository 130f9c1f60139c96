package model

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
)

// Reading the graph's inputs, outputs and metadata_props straight from the
// file, rather than asking ONNX Runtime, is deliberate. onnxruntime_go
// answers those questions only by building a throwaway session
// (GetInputOutputInfo, GetModelMetadata), and building one costs nearly as
// much as the real session even with every optimisation off: 1.35 s against
// 1.7 s for the small "s" transformer on a shared 2-core machine, so a
// check through ORT would almost double model load time. The file is
// streamed and the weights skipped, so this costs one pass over the file
// with no big allocation, and a wrong file is rejected before ORT spends
// seconds on it. TestHeaderMatchesORT (in package ort, which has the
// library) holds this reader to ORT's answers.

// Header is what the contract needs from an ONNX file: its graph's
// inputs and outputs, and its metadata_props.
type Header struct {
	Inputs   []TensorInfo // graph inputs that are not initializers
	Outputs  []TensorInfo
	Metadata map[string]string
}

// TensorInfo describes one graph input or output as ONNX Runtime's
// session would (TestHeaderMatchesORT in ort holds the two to each other):
// a dimension without a fixed value is dynamic, -1.
type TensorInfo struct {
	Name string
	Kind Kind
	Elem int32   // element type of a tensor (ElemFloat, ...: TensorProto.DataType)
	Dims []int64 // of a tensor; -1 = dynamic
}

// String renders t the way the contract's messages do: "blur [1 3 ? ?] float32".
func (t TensorInfo) String() string {
	return fmt.Sprintf("%s %s %s", t.Name, gotDims(t.Dims), elemName(t.Elem))
}

// Kind is what a graph input or output holds. The values are ONNX
// Runtime's ONNXType, so that its answers convert by a cast.
type Kind int

// The kinds of value (ONNXType in onnxruntime_c_api.h).
const (
	KindUnknown Kind = iota
	KindTensor
	KindSequence
	KindMap
	KindOpaque
	KindSparseTensor
	KindOptional
)

// String names k as ONNX Runtime does, so that the contract's messages
// read as they did when ORT described the graphs.
func (k Kind) String() string {
	names := [...]string{"UNKNOWN", "TENSOR", "SEQUENCE", "MAP", "OPAQUE", "SPARSE_TENSOR", "OPTIONAL"}
	if k < 0 || int(k) >= len(names) {
		return fmt.Sprintf("Unknown ONNX type: %d", int(k))
	}
	return "ONNX_TYPE_" + names[k]
}

// elemNames are TensorProto.DataType's names, by value.
var elemNames = [...]string{
	"UNDEFINED", "FLOAT", "UINT8", "INT8", "UINT16", "INT16", "INT32", "INT64", "STRING", "BOOL",
	"FLOAT16", "DOUBLE", "UINT32", "UINT64", "COMPLEX64", "COMPLEX128", "BFLOAT16",
	"FLOAT8E4M3FN", "FLOAT8E4M3FNUZ", "FLOAT8E5M2", "FLOAT8E5M2FNUZ", "UINT4", "INT4",
}

// elemName names an element type in messages: "float32", or ONNX's name
// for anything else ("DOUBLE").
func elemName(t int32) string {
	if t == ElemFloat {
		return "float32"
	}
	if t < 0 || int(t) >= len(elemNames) {
		return "Unknown tensor element data type: " + strconv.Itoa(int(t))
	}
	return elemNames[t]
}

// gotDims renders a shape a file declares; dynamic dimensions are -1.
func gotDims(dims []int64) string {
	parts := make([]string, len(dims))
	for i, d := range dims {
		if d < 0 {
			parts[i] = "?"
		} else {
			parts[i] = strconv.FormatInt(d, 10)
		}
	}
	return "[" + strings.Join(parts, " ") + "]"
}

// Field numbers from onnx.proto.
const (
	modelGraph         = 7
	modelMetadataProps = 14

	graphInitializer       = 5
	graphInput             = 11
	graphOutput            = 12
	graphSparseInitializer = 15

	tensorName         = 8 // TensorProto.name
	sparseTensorValues = 1 // SparseTensorProto.values (a TensorProto)

	valueInfoName = 1
	valueInfoType = 2

	typeTensor       = 1 // TypeProto.tensor_type
	typeSequence     = 4
	typeMap          = 5
	typeOpaque       = 7
	typeSparseTensor = 8
	typeOptional     = 9

	tensorTypeElem  = 1 // TypeProto.Tensor.elem_type
	tensorTypeShape = 2
	shapeDim        = 1 // TensorShapeProto.dim
	dimValue        = 1 // TensorShapeProto.Dimension.dim_value

	entryKey   = 1 // StringStringEntryProto
	entryValue = 2
)

// maxSmallMessage bounds what is read into memory whole (a ValueInfoProto or
// a metadata entry); anything bigger in those places is not a sane model.
const maxSmallMessage = 1 << 20

// ReadHeader reads path's graph inputs (initializers excluded, as ORT does),
// outputs and metadata_props. It streams the file and skips the weights.
func ReadHeader(path string) (*Header, error) {
	f, r, size, err := openProto(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	h := &Header{Metadata: map[string]string{}}
	var ins []TensorInfo
	initializers := map[string]bool{}
	sawGraph := false
	err = r.message(size, func(field, wire int, n int64) error {
		switch {
		case field == modelGraph && wire == 2:
			sawGraph = true
			return r.message(n, func(field, wire int, n int64) error {
				switch {
				case (field == graphInput || field == graphOutput) && wire == 2:
					info, err := r.valueInfo(n)
					if err != nil {
						return err
					}
					if field == graphInput {
						ins = append(ins, info)
					} else {
						h.Outputs = append(h.Outputs, info)
					}
					return nil
				case field == graphInitializer && wire == 2:
					name, err := r.tensorName(n)
					initializers[name] = true
					return err
				case field == graphSparseInitializer && wire == 2:
					return r.message(n, func(field, wire int, n int64) error {
						if field == sparseTensorValues && wire == 2 {
							name, err := r.tensorName(n)
							initializers[name] = true
							return err
						}
						return r.skip(wire, n)
					})
				}
				return r.skip(wire, n)
			})
		case field == modelMetadataProps && wire == 2:
			b, err := r.small(n)
			if err != nil {
				return err
			}
			var k, v string
			err = parseBytes(b, func(p *pbReader, field, wire int, n int64) error {
				switch {
				case field == entryKey && wire == 2:
					s, err := p.small(n)
					k = string(s)
					return err
				case field == entryValue && wire == 2:
					s, err := p.small(n)
					v = string(s)
					return err
				}
				return p.skip(wire, n)
			})
			h.Metadata[k] = v
			return err
		}
		return r.skip(wire, n)
	})
	if err != nil {
		return nil, fmt.Errorf("not an ONNX model: %w", err)
	}
	if !sawGraph {
		return nil, errors.New("not an ONNX model: no graph")
	}
	for _, in := range ins {
		if !initializers[in.Name] {
			h.Inputs = append(h.Inputs, in)
		}
	}
	return h, nil
}

// pbReader walks protobuf wire format from a stream, counting its position
// so that nested messages can be bounded by length.
// openProto opens an ONNX file for streaming: the file (to close), a
// buffered protobuf reader on it, and its size (the top-level message's length).
func openProto(path string) (*os.File, *pbReader, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, 0, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, 0, err
	}
	return f, &pbReader{r: bufio.NewReaderSize(f, 64<<10)}, st.Size(), nil
}

type pbReader struct {
	r   *bufio.Reader
	pos int64
}

func parseBytes(b []byte, fn func(p *pbReader, field, wire int, n int64) error) error {
	p := &pbReader{r: bufio.NewReader(bytes.NewReader(b))}
	return p.message(int64(len(b)), func(field, wire int, n int64) error { return fn(p, field, wire, n) })
}

func (p *pbReader) ReadByte() (byte, error) {
	c, err := p.r.ReadByte()
	if err == nil {
		p.pos++
	}
	return c, err
}

func (p *pbReader) varint() (uint64, error) {
	v, err := binary.ReadUvarint(p)
	if errors.Is(err, io.EOF) {
		err = io.ErrUnexpectedEOF
	}
	return v, err
}

// message calls fn for each field of a message of size bytes. For a
// length-delimited field, n is its length and fn must consume exactly that
// (read it, descend into it, or skip it); for other wire types n is 0 and
// fn must call skip, which consumes the value.
func (p *pbReader) message(size int64, fn func(field, wire int, n int64) error) error {
	end := p.pos + size
	for p.pos < end {
		tag, err := p.varint()
		if err != nil {
			return err
		}
		field, wire := int(tag>>3), int(tag&7)
		if field == 0 {
			return fmt.Errorf("bad protobuf field 0 at byte %d", p.pos)
		}
		var n int64
		if wire == 2 {
			l, err := p.varint()
			if err != nil {
				return err
			}
			if l > uint64(end-p.pos) {
				return fmt.Errorf("protobuf field %d at byte %d is %d bytes long, past the end of its message", field, p.pos, l)
			}
			n = int64(l)
		}
		start := p.pos
		if err := fn(field, wire, n); err != nil {
			return err
		}
		if wire == 2 && p.pos != start+n {
			return fmt.Errorf("protobuf field %d at byte %d: read %d of %d bytes", field, start, p.pos-start, n)
		}
	}
	if p.pos != end {
		return fmt.Errorf("protobuf message overruns its length at byte %d", p.pos)
	}
	return nil
}

// skip consumes a field's value: n bytes for wire type 2, else by type.
func (p *pbReader) skip(wire int, n int64) error {
	switch wire {
	case 0:
		_, err := p.varint()
		return err
	case 1:
		n = 8
	case 2:
	case 5:
		n = 4
	default:
		return fmt.Errorf("unsupported protobuf wire type %d at byte %d", wire, p.pos)
	}
	d, err := p.r.Discard(int(n))
	p.pos += int64(d)
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return err
}

func (p *pbReader) small(n int64) ([]byte, error) {
	if n > maxSmallMessage {
		return nil, fmt.Errorf("protobuf field at byte %d is %d bytes, more than expected", p.pos, n)
	}
	b := make([]byte, n)
	k, err := io.ReadFull(p.r, b)
	p.pos += int64(k)
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return b, err
}

// tensorName reads a TensorProto's name, skipping its (possibly large) data.
func (p *pbReader) tensorName(n int64) (string, error) {
	var name string
	err := p.message(n, func(field, wire int, n int64) error {
		if field == tensorName && wire == 2 {
			b, err := p.small(n)
			name = string(b)
			return err
		}
		return p.skip(wire, n)
	})
	return name, err
}

// valueInfo decodes a ValueInfoProto into a TensorInfo: a dimension
// without a dim_value is dynamic (-1), as ORT reports it.
func (p *pbReader) valueInfo(n int64) (TensorInfo, error) {
	info := TensorInfo{Kind: KindUnknown}
	b, err := p.small(n)
	if err != nil {
		return info, err
	}
	err = parseBytes(b, func(p *pbReader, field, wire int, n int64) error {
		switch {
		case field == valueInfoName && wire == 2:
			s, err := p.small(n)
			info.Name = string(s)
			return err
		case field == valueInfoType && wire == 2:
			return p.message(n, func(field, wire int, n int64) error {
				if wire != 2 {
					return p.skip(wire, n)
				}
				switch field {
				case typeTensor, typeSparseTensor:
					info.Kind = KindTensor
					if field == typeSparseTensor {
						info.Kind = KindSparseTensor
					}
					return p.tensorType(n, &info)
				case typeSequence:
					info.Kind = KindSequence
				case typeMap:
					info.Kind = KindMap
				case typeOpaque:
					info.Kind = KindOpaque
				case typeOptional:
					info.Kind = KindOptional
				}
				return p.skip(wire, n)
			})
		}
		return p.skip(wire, n)
	})
	return info, err
}

func (p *pbReader) tensorType(n int64, info *TensorInfo) error {
	info.Dims = []int64{}
	return p.message(n, func(field, wire int, n int64) error {
		switch {
		case field == tensorTypeElem && wire == 0:
			v, err := p.varint()
			info.Elem = int32(v)
			return err
		case field == tensorTypeShape && wire == 2:
			return p.message(n, func(field, wire int, n int64) error {
				if field != shapeDim || wire != 2 {
					return p.skip(wire, n)
				}
				d := int64(-1)
				err := p.message(n, func(field, wire int, n int64) error {
					if field == dimValue && wire == 0 {
						v, err := p.varint()
						d = int64(v)
						return err
					}
					return p.skip(wire, n)
				})
				info.Dims = append(info.Dims, d)
				return err
			})
		}
		return p.skip(wire, n)
	})
}
