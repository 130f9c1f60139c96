package config

import (
	"bytes"
	"strings"

	"github.com/pelletier/go-toml/v2/unstable"
)

// position is where a key was written and its value as written.
type position struct {
	line  int
	value string
}

// index maps each dotted key in doc to its line and raw value. go-toml's
// decoder reports positions only for its own errors; validation happens after
// decoding, so this second, cheap pass over the document lets a range error
// ("model.tile = 100 at line 17") point at the line as well.
func index(doc []byte) (map[string]position, error) {
	out := map[string]position{}
	var p unstable.Parser
	p.Reset(doc)
	var table []string
	for p.NextExpression() {
		e := p.Expression()
		switch e.Kind {
		case unstable.Table, unstable.ArrayTable:
			table = table[:0]
			for it := e.Key(); it.Next(); {
				table = append(table, string(it.Node().Data))
			}
		case unstable.KeyValue:
			key := append([]string(nil), table...)
			for it := e.Key(); it.Next(); {
				key = append(key, string(it.Node().Data))
			}
			raw := p.Raw(e.Raw)
			val := ""
			if i := bytes.IndexByte(raw, '='); i >= 0 {
				val = strings.TrimSpace(string(raw[i+1:]))
			}
			out[strings.Join(key, ".")] = position{line: p.Shape(e.Raw).Start.Line, value: val}
		}
	}
	return out, p.Error()
}

// valueOnLine returns what follows the first '=' on a 1-based line, without a
// trailing comment, for messages about keys the decoder rejected (and which
// index may not have reached).
func valueOnLine(doc []byte, line int) string {
	s := lineText(doc, line)
	i := strings.IndexByte(s, '=')
	if i < 0 {
		return ""
	}
	s = strings.TrimSpace(s[i+1:])
	if s != "" && s[0] != '"' && s[0] != '\'' {
		if j := strings.IndexByte(s, '#'); j >= 0 {
			s = strings.TrimSpace(s[:j])
		}
	} else if len(s) > 1 {
		if j := strings.IndexByte(s[1:], s[0]); j >= 0 {
			s = s[:j+2]
		}
	}
	return s
}

// lineText is the 1-based line of doc ("" past the end).
func lineText(doc []byte, line int) string {
	lines := bytes.Split(doc, []byte("\n"))
	if line < 1 || line > len(lines) {
		return ""
	}
	return string(lines[line-1])
}
