package spool

import (
	"errors"
	"syscall"
)

// transientErrnos is the one list of errnos that are failures of the
// machine, not of the frame: the daemon keeps the original and retries
// later with backoff instead of failing it. onRead says whether the errno
// is also the machine's fault when READING a frame (IsTransientRead); the
// others describe the state of the folder being written (full, read-only,
// refused) and, on a read, the frame itself: EACCES on an input is a file
// the daemon may not read, a reason to fail it, not to retry forever.
var transientErrnos = []struct {
	errno  syscall.Errno
	onRead bool
}{
	{syscall.ENOSPC, false},   // disk full
	{syscall.EDQUOT, false},   // quota exceeded
	{syscall.EROFS, false},    // filesystem remounted read-only (often after I/O errors)
	{syscall.EACCES, false},   // permissions on out/ changed by an operator
	{syscall.EPERM, false},    // immutable attribute, LSM denial
	{syscall.EBUSY, false},    // mount point busy
	{syscall.EIO, true},       // device error
	{syscall.EMFILE, true},    // out of file descriptors
	{syscall.ENFILE, true},    // system file table full
	{syscall.ENOMEM, true},    // kernel out of memory
	{syscall.EAGAIN, true},    // resource temporarily unavailable
	{syscall.EINTR, true},     // interrupted
	{syscall.ETIMEDOUT, true}, // network filesystem timeout
	{syscall.ESTALE, true},    // NFS stale handle after a server restart
}

// transientError marks failures of the spool's own filesystem steps (create,
// fsync, rename in out/): whatever the errno, they are never the frame's
// fault. An out/ that vanished or became a file (ENOENT, ENOTDIR) is an
// operator's mistake to fix, not a reason to fail frames.
type transientError struct{ err error }

func (e *transientError) Error() string { return e.err.Error() }
func (e *transientError) Unwrap() error { return e.err }

func transient(err error) error { return &transientError{err} }

// IsTransient reports whether err is a failure of the environment (disk full,
// quota, read-only filesystem, permissions, I/O error, spool folder missing)
// rather than of the frame. For such errors the daemon keeps the original
// (Release, or retry in place) and backs off. It is meant for errors from
// spool operations and output writing; for a failure to READ an input use
// IsTransientRead.
func IsTransient(err error) bool {
	if err == nil {
		return false
	}
	var t *transientError
	if errors.As(err, &t) {
		return true
	}
	return hasErrno(err, false)
}

// IsTransientRead reports whether a failure to read (probe, decode) a
// claimed frame is the machine's (out of descriptors or memory, an
// interrupted call, a device or network filesystem error), so the frame is
// retried; every other read failure (permission, a file that is not an
// image) is the frame's fault and fails it.
func IsTransientRead(err error) bool {
	return err != nil && hasErrno(err, true)
}

// hasErrno reports whether err wraps an errno of transientErrnos; with
// readOnly, only those that are transient on a read too.
func hasErrno(err error, readOnly bool) bool {
	for _, e := range transientErrnos {
		if (e.onRead || !readOnly) && errors.Is(err, e.errno) {
			return true
		}
	}
	return false
}
