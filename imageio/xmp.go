package imageio

import (
	"bytes"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"maps"
	"regexp"
	"sort"
	"strings"
)

// Namespaces the XMP editor knows.
const (
	nsRDF  = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
	nsTIFF = "http://ns.adobe.com/tiff/1.0/"
	nsXMP  = "http://ns.adobe.com/xap/1.0/"
)

// xmpEdit is one byte-range replacement in the source packet.
type xmpEdit struct {
	a, b int
	repl string
}

// editXMP returns the packet src with the hidiffd provenance properties
// added in their own rdf:Description (an earlier hidiffd description is
// replaced), tiff:Orientation set to 1 when the pixels were rotated, and
// xmp:Thumbnails (a preview of the blurry frame) removed. Everything else
// stays byte for byte. An error means src is not a usable XMP packet.
func editXMP(src []byte, props [][2]string, applied int) ([]byte, []string, error) {
	dec := xml.NewDecoder(bytes.NewReader(src))
	dec.Strict = true
	type scope struct {
		binds  map[string]string
		uri    string
		local  string
		start  int
		remove bool
		// An rdf:Description that binds the hidiffd namespace and holds
		// nothing else is an earlier hidiffd's: removed whole.
		ours, foreign bool
		edits         int // len(edits) when it started
	}
	var stack []scope
	var edits []xmpEdit
	var changes []string
	insertAt := -1
	removing := 0
	binds := map[string]string{"xml": "http://www.w3.org/XML/1998/namespace"}
	for {
		start := int(dec.InputOffset())
		tok, err := dec.RawToken()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, nil, fmt.Errorf("not well-formed XML: %v", err)
		}
		end := int(dec.InputOffset())
		switch t := tok.(type) {
		case xml.StartElement:
			b := binds
			copied := false
			for _, a := range t.Attr {
				if a.Name.Space == "xmlns" || (a.Name.Space == "" && a.Name.Local == "xmlns") {
					if !copied {
						b, copied = maps.Clone(binds), true
					}
					if a.Name.Space == "" {
						b[""] = a.Value
					} else {
						b[a.Name.Local] = a.Value
					}
				}
			}
			uri := b[t.Name.Space]
			sc := scope{binds: binds, uri: uri, local: t.Name.Local, start: start, edits: len(edits)}
			binds = b
			if len(stack) > 0 && uri != XMPNamespace {
				stack[len(stack)-1].foreign = true
			}
			if uri == nsRDF && t.Name.Local == "Description" {
				for _, a := range t.Attr {
					switch {
					case a.Name.Space == "xmlns" && a.Value == XMPNamespace:
						sc.ours = true
					case a.Name.Space == "xmlns", a.Name.Space == "" && a.Name.Local == "xmlns", b[a.Name.Space] == nsRDF:
					default:
						sc.foreign = true
					}
				}
			}
			switch {
			case removing > 0:
			case uri == nsXMP && t.Name.Local == "Thumbnails":
				sc.remove = true
				changes = append(changes, "XMP xmp:Thumbnails dropped (a preview of the blurry frame)")
			case uri == XMPNamespace:
				sc.remove = true
			}
			if sc.remove {
				removing++
			}
			if removing == 0 && applied > 1 {
				for _, a := range t.Attr {
					if a.Name.Local == "Orientation" && a.Name.Space != "" && b[a.Name.Space] == nsTIFF && strings.TrimSpace(a.Value) != "1" {
						re := regexp.MustCompile(`(\s` + regexp.QuoteMeta(a.Name.Space) + `:Orientation\s*=\s*)("[^"]*"|'[^']*')`)
						if loc := re.FindSubmatchIndex(src[start:end]); loc != nil {
							edits = append(edits, xmpEdit{start + loc[4], start + loc[5], `"1"`})
							changes = append(changes, fmt.Sprintf("XMP tiff:Orientation %s -> 1 (the pixels are rotated)", strings.TrimSpace(a.Value)))
						}
					}
				}
			}
			stack = append(stack, sc)
		case xml.EndElement:
			if len(stack) == 0 {
				return nil, nil, errors.New("not well-formed XML: unmatched end tag")
			}
			sc := stack[len(stack)-1]
			stack = stack[:len(stack)-1]
			binds = sc.binds
			if sc.remove {
				removing--
				if removing == 0 {
					edits = append(edits, xmpEdit{sc.start, end, ""})
				}
			}
			if sc.ours && !sc.foreign && removing == 0 {
				edits = append(edits[:sc.edits], xmpEdit{sc.start, end, ""})
			}
			if removing == 0 && sc.uri == nsRDF && sc.local == "RDF" && insertAt < 0 {
				insertAt = start
			}
		case xml.CharData:
			if removing == 0 && applied > 1 && len(stack) > 0 {
				top := stack[len(stack)-1]
				if top.uri == nsTIFF && top.local == "Orientation" && strings.TrimSpace(string(t)) != "1" {
					edits = append(edits, xmpEdit{start, end, "1"})
					changes = append(changes, fmt.Sprintf("XMP tiff:Orientation %s -> 1 (the pixels are rotated)", strings.TrimSpace(string(t))))
				}
			}
		}
	}
	if len(stack) != 0 {
		return nil, nil, errors.New("not well-formed XML: unclosed elements")
	}
	if insertAt < 0 {
		return nil, nil, errors.New("no rdf:RDF element")
	}
	edits = append(edits, xmpEdit{insertAt, insertAt, xmpDescription(props)})
	sort.SliceStable(edits, func(i, j int) bool { return edits[i].a < edits[j].a })
	var out bytes.Buffer
	out.Grow(len(src) + 1024)
	pos := 0
	for _, e := range edits {
		out.Write(src[pos:e.a])
		out.WriteString(e.repl)
		pos = e.b
	}
	out.Write(src[pos:])
	if err := checkXML(out.Bytes()); err != nil {
		return nil, nil, fmt.Errorf("packet not well-formed after the edit: %v", err)
	}
	return out.Bytes(), changes, nil
}

// checkXML parses b strictly to its end.
func checkXML(b []byte) error {
	dec := xml.NewDecoder(bytes.NewReader(b))
	dec.Strict = true
	for {
		if _, err := dec.Token(); err == io.EOF {
			return nil
		} else if err != nil {
			return err
		}
	}
}

// xmpDescription is one rdf:Description holding props in the hidiffd
// namespace. It declares the rdf prefix itself: the packet it goes into may
// bind rdf to another prefix.
func xmpDescription(props [][2]string) string {
	var b strings.Builder
	b.WriteString("\n  <rdf:Description xmlns:rdf=\"" + nsRDF + "\" rdf:about=\"\" xmlns:hidiffd=\"" + XMPNamespace + "\">\n")
	for _, kv := range props {
		b.WriteString("   <hidiffd:" + kv[0] + ">")
		xml.EscapeText(&b, []byte(kv[1]))
		b.WriteString("</hidiffd:" + kv[0] + ">\n")
	}
	b.WriteString("  </rdf:Description>\n ")
	return b.String()
}

// newXMP is a fresh packet holding only the provenance.
func newXMP(props [][2]string) []byte {
	return []byte("<?xpacket begin=\"\ufeff\" id=\"W5M0MpCehiHzreSzNTczkc9d\"?>\n" +
		"<x:xmpmeta xmlns:x=\"adobe:ns:meta/\">\n <rdf:RDF xmlns:rdf=\"" + nsRDF + "\">" +
		xmpDescription(props) + "</rdf:RDF>\n</x:xmpmeta>\n<?xpacket end=\"w\"?>")
}

// trimXMPPadding removes the whitespace padding before the closing xpacket
// instruction (room for in-place editors), for a packet over a size limit.
func trimXMPPadding(p []byte) []byte {
	i := bytes.LastIndex(p, []byte("<?xpacket end="))
	if i < 0 {
		return p
	}
	j := i
	for j > 0 && (p[j-1] == ' ' || p[j-1] == '\n' || p[j-1] == '\r' || p[j-1] == '\t') {
		j--
	}
	if i-j < 2 {
		return p
	}
	out := append(clone(p[:j]), '\n')
	return append(out, p[i:]...)
}
