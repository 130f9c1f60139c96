package imageio

import (
	"path/filepath"
	"strings"
)

// OutputFormat is the format a result is written in: the one its file name
// says (.jpg, .jpeg, .jpe: JPEG; .png: PNG), so that name and bytes always
// agree, even for a PNG named .jpg; the source's format for any other name.
func OutputFormat(name, source string) string {
	switch strings.ToLower(filepath.Ext(name)) {
	case ".jpg", ".jpeg", ".jpe":
		return FormatJPEG
	case ".png":
		return FormatPNG
	}
	return source
}
