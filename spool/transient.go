package spool

import (
	"errors"
	"syscall"
)

// transientErrnos are failures of the machine, not of the frame: the daemon
// keeps the original and retries later with backoff instead of failing it.
var transientErrnos = []syscall.Errno{
	syscall.ENOSPC,    // disk full
	syscall.EDQUOT,    // quota exceeded
	syscall.EROFS,     // filesystem remounted read-only (often after I/O errors)
	syscall.EACCES,    // permissions on out/ changed by an operator
	syscall.EPERM,     // immutable attribute, LSM denial
	syscall.EIO,       // device error on write
	syscall.EMFILE,    // out of file descriptors
	syscall.ENFILE,    // system file table full
	syscall.ENOMEM,    // kernel out of memory
	syscall.EAGAIN,    // resource temporarily unavailable
	syscall.EINTR,     // interrupted
	syscall.EBUSY,     // mount point busy
	syscall.ETIMEDOUT, // network filesystem timeout
	syscall.ESTALE,    // NFS stale handle after a server restart
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
// spool operations and output writing; whether a failure to READ an input
// (e.g. EACCES on the frame itself) is the frame's fault is the caller's call.
func IsTransient(err error) bool {
	if err == nil {
		return false
	}
	var t *transientError
	if errors.As(err, &t) {
		return true
	}
	for _, e := range transientErrnos {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}
