// Package logging makes hidiffd's loggers: zerolog JSON lines (with syslog
// priorities when the output is the journal) or console lines on a
// terminal, one process-wide level that SIGHUP can change, and the small
// key-value logger that libraries without zerolog (spool, watch, gpu) take.
// The daemon and the one-shot commands use the same constructor, so their
// lines look alike.
package logging

import (
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"
	"golang.org/x/term"
)

// New builds the process logger writing to w (normally os.Stdout).
//
// format "auto" picks human-readable console lines when w is a terminal and
// JSON lines otherwise (journald, pipes, files). When w is the journal's
// stream ($JOURNAL_STREAM names its device and inode), each JSON line gets a
// "<N>" syslog priority prefix, which journald strips and stores as the
// entry's PRIORITY: `journalctl -u hidiffd -p warning` then works while the
// MESSAGE stays plain JSON.
//
// The level is set process-wide (zerolog.SetGlobalLevel) so that SetLevel
// can change it on SIGHUP for every logger derived from this one.
func New(w io.Writer, level, format string) (zerolog.Logger, error) {
	if err := SetLevel(level); err != nil {
		return zerolog.Nop(), err
	}
	zerolog.TimeFieldFormat = time.RFC3339Nano
	zerolog.DurationFieldUnit = time.Millisecond
	zerolog.DurationFieldInteger = false

	f, isFile := w.(*os.File)
	switch format {
	case "auto":
		if isFile && term.IsTerminal(int(f.Fd())) {
			format = "console"
		} else {
			format = "json"
		}
	case "console", "json":
	default:
		return zerolog.Nop(), fmt.Errorf("log format %q: want auto, console or json", format)
	}
	var out io.Writer = w
	if format == "console" {
		out = zerolog.ConsoleWriter{Out: w, TimeFormat: "15:04:05.000", NoColor: !(isFile && term.IsTerminal(int(f.Fd())))}
	} else if isFile && isJournalStream(f) {
		out = journalWriter{w: w}
	}
	return zerolog.New(out).Level(zerolog.TraceLevel).With().Timestamp().Logger(), nil
}

// SetLevel changes the process-wide log level.
func SetLevel(level string) error {
	l, err := zerolog.ParseLevel(strings.ToLower(level))
	if err != nil || level == "" {
		return fmt.Errorf("log level %q: want trace, debug, info, warn or error", level)
	}
	zerolog.SetGlobalLevel(l)
	return nil
}

// isJournalStream reports whether f is the stream systemd connected to the
// journal: $JOURNAL_STREAM is "DEVICE:INODE" of that stream, and a child
// that inherited the variable but writes elsewhere must not add prefixes.
func isJournalStream(f *os.File) bool {
	dev, ino, ok := strings.Cut(os.Getenv("JOURNAL_STREAM"), ":")
	if !ok {
		return false
	}
	d, err1 := strconv.ParseUint(dev, 10, 64)
	i, err2 := strconv.ParseUint(ino, 10, 64)
	if err1 != nil || err2 != nil {
		return false
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return false
	}
	return uint64(st.Dev) == d && uint64(st.Ino) == i
}

// journalWriter prefixes each line with its syslog priority (sd-daemon(3)).
type journalWriter struct{ w io.Writer }

func (j journalWriter) Write(p []byte) (int, error) { return j.WriteLevel(zerolog.NoLevel, p) }

func (j journalWriter) WriteLevel(l zerolog.Level, p []byte) (int, error) {
	prio := 6 // info
	switch l {
	case zerolog.TraceLevel, zerolog.DebugLevel:
		prio = 7
	case zerolog.WarnLevel:
		prio = 4
	case zerolog.ErrorLevel:
		prio = 3
	case zerolog.FatalLevel:
		prio = 2
	case zerolog.PanicLevel:
		prio = 0
	}
	// One write per line: journald splits the stream at newlines, and a
	// prefix written separately could interleave with another goroutine's.
	buf := make([]byte, 0, len(p)+3)
	buf = append(buf, '<', byte('0'+prio), '>')
	buf = append(buf, p...)
	if _, err := j.w.Write(buf); err != nil {
		return 0, err
	}
	return len(p), nil
}

// KV adapts zerolog to the func(level, msg, kv...) logger that spool, watch
// and gpu take, so those packages do not depend on zerolog.
func KV(l zerolog.Logger) func(level, msg string, kv ...any) {
	return func(level, msg string, kv ...any) {
		var e *zerolog.Event
		switch level {
		case "debug":
			e = l.Debug()
		case "warn":
			e = l.Warn()
		case "error":
			e = l.Error()
		default:
			e = l.Info()
		}
		e.Fields(kv).Msg(msg)
	}
}
