package daemon

import (
	"encoding/binary"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"hidiffd/imageio"
	"hidiffd/imageio/metatest"
)

// dropAt drops a frame whose file time is mtime.
func (in *instance) dropAt(name string, data []byte, mtime time.Time) {
	in.t.Helper()
	tmp := filepath.Join(in.dir("inbox"), "."+name+".incoming")
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		in.t.Fatal(err)
	}
	if err := os.Chtimes(tmp, time.Time{}, mtime); err != nil {
		in.t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(in.dir("inbox"), name)); err != nil {
		in.t.Fatal(err)
	}
}

// TestOutputsKeepMetadataAndSayHowTheyWereMade runs frames through the
// daemon with output.sidecar on: each output keeps its camera metadata
// (upright), names hidiffd and the model, has its original's file time and
// a NAME.json beside it; malformed metadata costs one log line, not the
// frame.
func TestOutputsKeepMetadataAndSayHowTheyWereMade(t *testing.T) {
	in := start(t, setup{toml: "[output]\nsidecar = true\n"})
	in.waitReady()
	shot := time.Date(2026, 12, 2, 10, 0, 0, 123456789, time.UTC)
	jpg := metatest.JPEG(metatest.Picture(40, 24), 90,
		append([][]byte{metatest.EXIFSegment(metatest.CameraEXIF(binary.LittleEndian, 8, 40, 24))},
			metatest.ICCSegments(metatest.DisplayP3(), 300)...)...)
	pngIn := metatest.PNG(metatest.Picture(30, 20), metatest.ICCPChunk("Display P3", metatest.DisplayP3()),
		metatest.EXIfChunk(metatest.CameraEXIF(binary.BigEndian, 1, 30, 20)), metatest.TextChunk("Comment", "gate 4"))
	broken := metatest.CameraEXIF(binary.BigEndian, 1, 16, 16)
	binary.BigEndian.PutUint32(broken[4:], 60000) // IFD0 far outside the block
	bad := metatest.JPEG(metatest.Picture(16, 16), 90, metatest.EXIFSegment(broken))
	in.dropAt("cam.jpg", jpg, shot)
	in.dropAt("cam.png", pngIn, shot.Add(time.Second))
	in.dropAt("bad.jpg", bad, shot.Add(2*time.Second))
	in.eventually(15*time.Second, "three outputs", func() bool {
		return in.has("done", "cam.jpg") && in.has("done", "cam.png") && in.has("done", "bad.jpg")
	})

	for i, name := range []string{"cam.jpg", "cam.png", "bad.jpg"} {
		p := filepath.Join(in.dir("out"), name)
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if want := shot.Add(time.Duration(i) * time.Second); !fi.ModTime().Equal(want) {
			t.Errorf("%s: mtime %v, want the original's %v", name, fi.ModTime(), want)
		}
		data, _ := os.ReadFile(p)
		m, err := imageio.ExtractMetadata(data)
		if err != nil || len(m.Problems) != 0 {
			t.Fatalf("%s: %v %q", name, err, m.Problems)
		}
		x := string(m.XMP)
		if !strings.Contains(x, "<hidiffd:Backend>fake</hidiffd:Backend>") || !strings.Contains(x, "<hidiffd:Tile>"+sc0(t, p).Provenance.Tile+"</hidiffd:Tile>") ||
			!strings.Contains(x, "<hidiffd:Version>test</hidiffd:Version>") || !strings.Contains(x, "<hidiffd:Preset>test</hidiffd:Preset>") {
			t.Errorf("%s: XMP provenance: %s", name, x)
		}
		if !strings.Contains(string(m.EXIF), "hidiffd test (fake test 0") {
			t.Errorf("%s: no Software in EXIF", name)
		}
		if name != "bad.jpg" && (!strings.Contains(string(m.EXIF), metatest.Make) || len(m.ICC) != len(metatest.DisplayP3())) {
			t.Errorf("%s: camera metadata lost (EXIF %d bytes, ICC %d bytes)", name, len(m.EXIF), len(m.ICC))
		}

		var sc Sidecar
		raw, err := os.ReadFile(p + ".json")
		if err != nil {
			t.Fatalf("sidecar: %v", err)
		}
		if err := json.Unmarshal(raw, &sc); err != nil {
			t.Fatalf("sidecar: %v\n%s", err, raw)
		}
		if sc.Name != name || sc.Output != name || sc.Provenance.Backend != "fake" || sc.Provenance.Model != "fake" ||
			sc.Source.Mtime != shot.Add(time.Duration(i)*time.Second).Format(time.RFC3339Nano) || len(sc.Source.SHA256) != 64 ||
			sc.Tiles == 0 || sc.TimingsMS.Total <= 0 || sc.TimingsMS.Encode <= 0 {
			t.Errorf("%s.json:\n%s", name, raw)
		}
		if name == "cam.jpg" && (sc.Width != 24 || sc.Height != 40 || !strings.Contains(strings.Join(sc.Metadata.Changed, ";"), "Orientation 8 -> 1")) {
			t.Errorf("%s.json (orientation 8):\n%s", name, raw)
		}
		if name == "bad.jpg" && (len(sc.Metadata.Problems) != 1 || !strings.Contains(sc.Metadata.Problems[0], "IFD0 offset 60000")) {
			t.Errorf("%s.json lacks the dropped EXIF:\n%s", name, raw)
		}
	}
	// One warning line for the malformed EXIF, naming the frame and what.
	warn := in.logs.lines("malformed metadata dropped; the frame goes on")
	if len(warn) != 1 || warn[0]["name"] != "bad.jpg" || !strings.Contains(toJSON(warn[0]["dropped"]), "EXIF dropped: IFD0 offset 60000") {
		t.Errorf("warning lines: %v", warn)
	}
	// The per-image log line carries the provenance.
	for _, l := range in.logs.lines("deblurred") {
		p, _ := l["provenance"].(map[string]any)
		if p["software"] != "hidiffd" || p["backend"] != "fake" || p["precision"] != "fp32" || !strings.Contains(toJSON(p["tile"]), "x") || p["seed"] != 0.0 {
			t.Errorf("log line provenance: %v", l)
		}
	}
	in.stop()
}

// sc0 reads the sidecar of the output at p.
func sc0(t *testing.T, p string) Sidecar {
	var sc Sidecar
	raw, _ := os.ReadFile(p + ".json")
	json.Unmarshal(raw, &sc)
	if sc.Provenance == nil {
		t.Fatalf("no sidecar for %s", p)
	}
	return sc
}

func toJSON(v any) string { b, _ := json.Marshal(v); return string(b) }

// TestOutputMetadataKeysOff: keep_metadata, keep_mtime and sidecar off.
func TestOutputMetadataKeysOff(t *testing.T) {
	in := start(t, setup{toml: "[output]\nkeep_metadata = false\nkeep_mtime = false\nsidecar = false\n"})
	in.waitReady()
	old := time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)
	in.dropAt("cam.jpg", metatest.JPEG(metatest.Picture(16, 16), 90,
		metatest.EXIFSegment(metatest.CameraEXIF(binary.LittleEndian, 1, 16, 16))), old)
	in.eventually(10*time.Second, "output", func() bool { return in.has("done", "cam.jpg") })
	p := filepath.Join(in.dir("out"), "cam.jpg")
	fi, _ := os.Stat(p)
	if fi.ModTime().Before(time.Now().Add(-time.Hour)) {
		t.Errorf("mtime %v kept with keep_mtime = false", fi.ModTime())
	}
	if in.has("out", "cam.jpg.json") {
		t.Error("sidecar written with sidecar = false")
	}
	data, _ := os.ReadFile(p)
	m, _ := imageio.ExtractMetadata(data)
	if strings.Contains(string(data), metatest.Make) || !strings.Contains(string(m.EXIF), "hidiffd test") {
		t.Errorf("keep_metadata = false: camera metadata kept or provenance missing")
	}
	in.stop()
}
