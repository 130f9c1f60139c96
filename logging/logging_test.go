package logging

import (
	"bytes"
	"strings"
	"testing"

	"github.com/rs/zerolog"
)

func TestNewRefuses(t *testing.T) {
	cases := []struct{ name, level, format, want string }{
		{"unknown format", "info", "xml", `log format "xml"`},
		{"unknown level", "loud", "json", `log level "loud"`},
		{"empty level", "", "json", `log level ""`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := New(&bytes.Buffer{}, c.level, c.format)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("err = %v, want %q", err, c.want)
			}
		})
	}
}

// TestKV: the libraries' key-value lines come out as zerolog fields at the
// level they name.
func TestKV(t *testing.T) {
	var buf bytes.Buffer
	log, err := New(&buf, "debug", "json")
	if err != nil {
		t.Fatal(err)
	}
	defer SetLevel("info")
	KV(log)("warn", "claim failed", "name", "a.jpg", "tries", 2)
	got := buf.String()
	for _, w := range []string{`"level":"warn"`, `"name":"a.jpg"`, `"tries":2`, `"message":"claim failed"`} {
		if !strings.Contains(got, w) {
			t.Errorf("line %s lacks %s", got, w)
		}
	}
}

func TestJournalWriterPrefix(t *testing.T) {
	var buf bytes.Buffer
	j := journalWriter{w: &buf}
	n, err := j.WriteLevel(zerolog.FatalLevel, []byte("{\"x\":1}\n"))
	if err != nil || n != 8 {
		t.Fatalf("n %d err %v", n, err)
	}
	if got := buf.String(); got != "<2>{\"x\":1}\n" {
		t.Errorf("got %q", got)
	}
}
