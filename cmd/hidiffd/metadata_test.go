package main

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	exif "github.com/dsoprea/go-exif/v3"

	"hidiffd/daemon"
	"hidiffd/imageio"
	"hidiffd/imageio/metatest"
)

// TestDeblurKeepsMetadata is the acceptance run through the real
// binary and the real model: a camera JPEG (EXIF DateTime, Make, GPS, maker
// note, thumbnail, orientation 6, a Display P3 profile) and a PNG (eXIf,
// iCCP, tEXt) come out with the same DateTime/Make/GPS and profile,
// Orientation 1, no thumbnail, a Software naming hidiffd and the model, the
// originals' file times, and NAME.json beside them.
func TestDeblurKeepsMetadata(t *testing.T) {
	modelDir, ortLib := testModel(t)
	dir := t.TempDir()
	in := filepath.Join(dir, "in")
	os.Mkdir(in, 0o755)
	shot := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	jpg := metatest.JPEG(metatest.Picture(64, 40), 92,
		append([][]byte{metatest.EXIFSegment(metatest.CameraEXIF(binary.LittleEndian, 6, 64, 40)),
			metatest.XMPSegment(metatest.XMP(6))}, metatest.ICCSegments(metatest.DisplayP3(), 65519)...)...)
	pngIn := metatest.PNG(metatest.Picture(48, 32), metatest.ICCPChunk("Display P3", metatest.DisplayP3()),
		metatest.EXIfChunk(metatest.CameraEXIF(binary.BigEndian, 1, 48, 32)), metatest.TextChunk("Comment", "gate 4"))
	for name, data := range map[string][]byte{"cam.jpg": jpg, "cam.png": pngIn} {
		p := filepath.Join(in, name)
		os.WriteFile(p, data, 0o644)
		os.Chtimes(p, time.Time{}, shot)
	}
	out := filepath.Join(dir, "out")
	cmd := exec.Command(hidiffdBin(t), "deblur", "--model", modelDir, "--tile", "64", "--threads", "1", "--seed", "5",
		"--sidecar", in, "--out", out)
	cmd.Env = append(os.Environ(), "HIDIFFD_ORT_LIB="+ortLib)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("deblur: %v\n%s\n%s", err, stdout.String(), stderr.String())
	}

	for _, name := range []string{"cam.jpg", "cam.png"} {
		p := filepath.Join(out, name)
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi, _ := os.Stat(p); !fi.ModTime().Equal(shot) {
			t.Errorf("%s: mtime %v, want %v", name, fi.ModTime(), shot)
		}
		m, err := imageio.ExtractMetadata(data)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(m.ICC, metatest.DisplayP3()) {
			t.Errorf("%s: ICC profile not kept", name)
		}
		tags, _, err := exif.GetFlatExifData(m.EXIF, nil)
		if err != nil {
			t.Fatalf("%s: go-exif: %v", name, err)
		}
		got := map[string]string{}
		for _, tg := range tags {
			got[tg.IfdPath+"/"+tg.TagName] = tg.Formatted
		}
		for k, want := range map[string]string{"IFD/DateTime": metatest.DateTime, "IFD/Make": metatest.Make,
			"IFD/GPSInfo/GPSLatitude": "[48/1 51/1 2940/100]", "IFD/GPSInfo/GPSLongitude": "[2/1 17/1 4020/100]",
			"IFD/Orientation": "[1]"} {
			if got[k] != want {
				t.Errorf("%s: EXIF %s = %q, want %q", name, k, got[k], want)
			}
		}
		sw := got["IFD/Software"]
		if !strings.HasPrefix(sw, "hidiffd "+testVersion+" (HI-Diff s") || !strings.Contains(sw, "onnxruntime fp32, seed 5") {
			t.Errorf("%s: Software %q", name, sw)
		}
		for k := range got {
			if strings.HasPrefix(k, "IFD1") {
				t.Errorf("%s: thumbnail left (%s)", name, k)
			}
		}
		if !strings.Contains(string(m.XMP), "<hidiffd:Model>HI-Diff</hidiffd:Model>") {
			t.Errorf("%s: XMP: %s", name, m.XMP)
		}
		var sc daemon.Sidecar
		raw, err := os.ReadFile(p + ".json")
		if err != nil || json.Unmarshal(raw, &sc) != nil {
			t.Fatalf("%s.json: %v %s", name, err, raw)
		}
		if sc.Provenance.Model != "HI-Diff" || sc.Provenance.Preset != "s" || len(sc.Provenance.WeightsSHA256) != 64 ||
			sc.Provenance.Seed != 5 || sc.TimingsMS.Transformer <= 0 || !strings.Contains(sw, sc.Provenance.WeightsSHA256) {
			t.Errorf("%s.json:\n%s", name, raw)
		}
		if bin, err := exec.LookPath("exiftool"); err == nil {
			o, err := exec.Command(bin, "-a", "-G1", "-s", "-all", "-validate", "-warning", p).CombinedOutput()
			if err != nil || !strings.Contains(string(o), "Validate                        : OK") ||
				!strings.Contains(string(o), "[GPS]           GPSLatitude                     : 48 deg 51' 29.40\"") {
				t.Errorf("%s: exiftool: %v\n%s", name, err, o)
			}
		}
	}
	// The JSON line per image carries the provenance.
	n := 0
	for _, l := range strings.Split(strings.TrimSpace(stdout.String()), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(l), &m) == nil && m["message"] == "deblurred" {
			n++
			if p, _ := m["provenance"].(map[string]any); p["model"] != "HI-Diff" || p["seed"] != 5.0 || p["version"] != testVersion {
				t.Errorf("log line: %s", l)
			}
		}
	}
	if n != 2 {
		t.Errorf("%d deblurred lines:\n%s", n, stdout.String())
	}
}
