package imageio

import "testing"

func TestOutputFormat(t *testing.T) {
	for _, c := range []struct{ name, source, want string }{
		{"a.jpg", FormatPNG, FormatJPEG},
		{"a.JPEG", FormatPNG, FormatJPEG},
		{"a.png", FormatJPEG, FormatPNG},
		{"a.PNG", FormatPNG, FormatPNG},
		{"frame", FormatPNG, FormatPNG},
		{"frame.raw", FormatJPEG, FormatJPEG},
	} {
		t.Run(c.name+"/"+c.source, func(t *testing.T) {
			if got := OutputFormat(c.name, c.source); got != c.want {
				t.Errorf("OutputFormat(%q, %q) = %q, want %q", c.name, c.source, got, c.want)
			}
		})
	}
}
