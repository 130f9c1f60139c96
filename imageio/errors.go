package imageio

import (
	"errors"
	"fmt"
	"io"
	"strings"
)

// Stages of the image path. They go into NAME.error.json so an operator can
// tell "the file was never an image" from "we failed to write the result".
const (
	StageProbe  = "probe"
	StageDecode = "decode"
	StageEncode = "encode"
)

// Codes are stable, machine-readable causes; Reason is the human sentence.
// The daemon can count failures by Code without parsing English.
const (
	CodeNotFound     = "not_found"      // the file vanished before we opened it
	CodeSymlink      = "symlink"        // refused: we never follow links out of the spool
	CodeNotRegular   = "not_regular"    // directory, fifo, device or socket
	CodeEmpty        = "empty"          // zero bytes
	CodeFileTooLarge = "file_too_large" // more bytes than Limits.MaxBytes
	CodeTooLarge     = "too_large"      // more pixels than Limits.MaxPixels (seen in the header)
	CodeNotImage     = "not_image"      // no known image signature
	CodeUnsupported  = "unsupported"    // not JPEG or PNG, or a JPEG/PNG feature Go cannot decode
	CodeTruncated    = "truncated"      // the data ends early
	CodeCorrupt      = "corrupt"        // the data is malformed
	CodeIO           = "io"             // read or write error from the OS
	CodeInvalid      = "invalid"        // encode was handed an inconsistent Image or options
)

// Error is what every function in this package returns on failure. Its
// exported fields marshal straight into the daemon's NAME.error.json.
type Error struct {
	Stage  string `json:"stage"`
	Code   string `json:"code"`
	Reason string `json:"reason"`
	Err    error  `json:"-"` // underlying cause, if any (kept for errors.Is/As)
}

func (e *Error) Error() string { return e.Stage + ": " + e.Reason }

func (e *Error) Unwrap() error { return e.Err }

func newErr(stage, code string, cause error, format string, args ...any) *Error {
	return &Error{Stage: stage, Code: code, Reason: fmt.Sprintf(format, args...), Err: cause}
}

// AsError extracts an *Error from err's chain, or wraps a foreign error so
// callers always have a stage and reason to report.
func AsError(err error, stage string) *Error {
	if err == nil {
		return nil
	}
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	return &Error{Stage: stage, Code: CodeIO, Reason: err.Error(), Err: err}
}

// classifyDecodeErr turns an error from image/jpeg or image/png into an
// *Error. Truncation shows up in three shapes: io.ErrUnexpectedEOF (both
// decoders, between segments/chunks), image/jpeg's unexported "short Huffman
// data" FormatError (EOF inside entropy-coded data), and for PNG a zlib
// stream that ends early (also io.ErrUnexpectedEOF).
func classifyDecodeErr(stage, format string, err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	msg := err.Error()
	switch {
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF),
		strings.Contains(msg, "short Huffman data"),
		strings.Contains(msg, "not enough pixel data"):
		return newErr(stage, CodeTruncated, err, "truncated %s: %v", format, err)
	case strings.Contains(msg, "unsupported"):
		return newErr(stage, CodeUnsupported, err, "unsupported %s: %v", format, err)
	default:
		return newErr(stage, CodeCorrupt, err, "corrupt %s: %v", format, err)
	}
}
