package imageio

import (
	"fmt"
	"strconv"
	"strings"
)

// Provenance says how an output was made. It goes into the output's EXIF
// Software tag (Text) and XMP (the hidiffd namespace), PNG's Software text,
// the per-image log line and the optional NAME.json sidecar. It holds no
// time, so the same input, model and settings give the same output bytes.
type Provenance struct {
	Software      string `json:"software"` // "hidiffd"
	Version       string `json:"version"`  // hidiffd's version
	Model         string `json:"model"`    // "HI-Diff"
	ModelVersion  string `json:"model_version,omitempty"`
	Preset        string `json:"preset"`
	WeightsSHA256 string `json:"weights_sha256"`
	Backend       string `json:"backend"`   // "onnxruntime", "tensorrt"
	Precision     string `json:"precision"` // "fp32", "fp16"
	Seed          uint64 `json:"seed"`
	Tile          string `json:"tile"` // network input size, "384x384"
	Overlap       int    `json:"overlap"`
}

// XMPNamespace is the namespace of the hidiffd properties written into the
// outputs' XMP (prefix "hidiffd").
const XMPNamespace = "urn:hidiffd:xmp:provenance:1.0#"

// Text is the one-line form written to EXIF Software and PNG's Software
// text: printable ASCII, as EXIF's ASCII type requires.
func (p *Provenance) Text() string {
	sw := p.Software
	if sw == "" {
		sw = "hidiffd"
	}
	model := strings.TrimSpace(p.Model + " " + p.Preset)
	if p.ModelVersion != "" {
		model += " " + p.ModelVersion
	}
	s := fmt.Sprintf("%s %s (%s, weights sha256:%s, %s %s, seed %d, tile %s overlap %d)",
		sw, p.Version, model, p.WeightsSHA256, p.Backend, p.Precision, p.Seed, p.Tile, p.Overlap)
	return asciiOnly(s)
}

func asciiOnly(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r > 0x7E {
			return '?'
		}
		return r
	}, s)
}

// xmpProperties are the hidiffd:NAME properties, in a fixed order.
func (p *Provenance) xmpProperties(src *Metadata, oldSoftware string) [][2]string {
	sw := p.Software
	if sw == "" {
		sw = "hidiffd"
	}
	props := [][2]string{
		{"Software", sw}, {"Version", p.Version}, {"Model", p.Model}, {"ModelVersion", p.ModelVersion},
		{"Preset", p.Preset}, {"WeightsSHA256", p.WeightsSHA256}, {"Backend", p.Backend},
		{"Precision", p.Precision}, {"Seed", strconv.FormatUint(p.Seed, 10)}, {"Tile", p.Tile},
		{"Overlap", strconv.Itoa(p.Overlap)},
	}
	if src != nil && src.SourceSHA256 != "" {
		props = append(props, [2]string{"SourceSHA256", src.SourceSHA256})
	}
	if oldSoftware != "" {
		props = append(props, [2]string{"SourceSoftware", oldSoftware})
	}
	out := props[:0]
	for _, kv := range props {
		if kv[1] != "" {
			out = append(out, kv)
		}
	}
	return out
}
