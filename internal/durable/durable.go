// Package durable writes a file so that, after a crash or a power loss, it
// is either whole under its final name or not there at all: a temporary
// dotfile in the same folder is filled, fsynced and closed, renamed to the
// final name, and the folder is fsynced. It is the one place hidiffd does
// this (spool outputs, sidecars and error records, `hidiffd deblur`'s and
// `eval`'s files, the TensorRT engine cache's sidecar); see
// docs/ARCHITECTURE.md, "Spool states".
//
// Every error is returned, as an *Error naming the step that failed, never
// dropped: a close or folder fsync that fails means the file may not be
// durable, and the caller decides what that costs. On any failure before
// the rename the temporary file is removed. A caller that must never
// replace an existing file (the spool: an output never overwrites anything)
// renames with a NoReplace.
package durable

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// TempMarker is part of every temporary name this package creates:
// DIR/.NAME.hidiffd-tmp-XXXXXXXX. The leading dot hides it from folder
// watchers that ignore dotfiles; the marker lets a recovery (spool.Recover)
// recognise and delete what a crash left behind.
const TempMarker = ".hidiffd-tmp-"

// IsTemp reports whether a file name is one of this package's temporary
// names.
func IsTemp(name string) bool {
	return strings.HasPrefix(name, ".") && strings.Contains(name, TempMarker)
}

// Op is the step of a write that failed.
type Op string

// The steps of Write, in order.
const (
	OpCreate  Op = "create"       // creating the temporary file
	OpWrite   Op = "write"        // the caller's write function
	OpSync    Op = "fsync"        // fsync of the temporary file
	OpClose   Op = "close"        // closing it
	OpRename  Op = "rename"       // renaming it to the final name
	OpSyncDir Op = "fsync folder" // fsync of the folder after the rename
)

// Error is a failed Write: the step, the final path asked for, and the
// cause (errors.Is/As see through it: fs.ErrExist for a NoReplace rename
// onto a taken name, the write function's own error, an errno).
type Error struct {
	Op   Op
	Path string
	Err  error
}

func (e *Error) Error() string { return fmt.Sprintf("%s %s: %v", e.Op, e.Path, e.Err) }
func (e *Error) Unwrap() error { return e.Err }

// Published reports whether the file is in place under its final name
// although the write failed: only the folder's fsync did, so the rename may
// not survive a power loss. A caller that cannot accept that removes the
// file again (the spool unpublishes the output and retries the frame).
func (e *Error) Published() bool { return e.Op == OpSyncDir }

// Options say how Write creates and publishes a file.
type Options struct {
	// Perm is the new file's mode, before the umask (as os.OpenFile); 0
	// means 0o600.
	Perm fs.FileMode
	// NoReplace, if set, publishes the file only under a free name: an
	// existing file at the final path is never replaced, and Write fails
	// with OpRename and fs.ErrExist. nil: the rename replaces what is
	// there (rename(2) is atomic, so a reader sees the old file or the new
	// one).
	NoReplace *NoReplace
}

// Write creates path durably: write fills a temporary file in path's
// folder, which is fsynced, closed and renamed to path, and the folder is
// fsynced. write may use the *os.File beyond writing (set its times, say);
// it must not close it. Errors are *Error. On a failure before the rename
// the temporary file is closed and removed (a failure of that cleanup is
// joined to the error); after the rename (OpSyncDir) the file stays.
func Write(path string, opts Options, write func(f *os.File) error) error {
	dir, name := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	perm := opts.Perm
	if perm == 0 {
		perm = 0o600
	}
	f, tmp, err := createTemp(dir, name, perm)
	if err != nil {
		return &Error{Op: OpCreate, Path: path, Err: err}
	}
	fail := func(op Op, err error) error {
		var cleanup []error
		if f != nil {
			if cerr := f.Close(); cerr != nil && !errors.Is(cerr, os.ErrClosed) {
				cleanup = append(cleanup, cerr)
			}
		}
		if rerr := os.Remove(tmp); rerr != nil && !errors.Is(rerr, fs.ErrNotExist) {
			cleanup = append(cleanup, rerr)
		}
		if len(cleanup) > 0 {
			err = errors.Join(append([]error{err}, cleanup...)...)
		}
		return &Error{Op: op, Path: path, Err: err}
	}
	if err := write(f); err != nil {
		return fail(OpWrite, err)
	}
	if err := f.Sync(); err != nil {
		return fail(OpSync, err)
	}
	err = f.Close()
	f = nil
	if err != nil {
		return fail(OpClose, err)
	}
	if opts.NoReplace != nil {
		err = opts.NoReplace.Rename(tmp, path)
	} else {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		return fail(OpRename, err)
	}
	if err := SyncDir(dir); err != nil {
		return &Error{Op: OpSyncDir, Path: path, Err: err}
	}
	return nil
}

// WriteFile is Write of data, replacing what is at path: os.WriteFile made
// durable.
func WriteFile(path string, data []byte, perm fs.FileMode) error {
	return Write(path, Options{Perm: perm}, func(f *os.File) error {
		_, err := f.Write(data)
		return err
	})
}

// SyncDir fsyncs a folder, so that renames into or out of it survive a
// power loss. A file system that cannot fsync a folder (EINVAL, ENOTSUP)
// is accepted: there is nothing more a program could do there. Every other
// error, the close's included, is returned.
func SyncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = f.Sync()
	cerr := f.Close()
	if err != nil {
		if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOTSUP) {
			return cerr
		}
		return err
	}
	return cerr
}

// NoReplace renames without ever replacing the destination:
// renameat2(RENAME_NOREPLACE). A file system that lacks it (NFS, which
// answers EINVAL) is remembered, and from then on the rename is made of a
// hard link and an unlink, each of which the file server does atomically:
// link(src, dst) fails with EEXIST if dst is taken, so the destination is
// never replaced, and of several renamers that linked the same src only
// the one whose unlink(src) succeeds keeps its new name; the others remove
// theirs and see fs.ErrNotExist, as a losing rename(2) would. Between the
// link and the unlink the file has both names: a crash there leaves it
// under both (a frame may then be processed twice, never lost). A file
// system without hard links either (some SMB shares) falls back to a
// check-then-rename, race-free only against renames through the same
// NoReplace under the caller's own lock. Use one NoReplace per file system
// (the spool has one); the zero value is ready to use and safe for
// concurrent use.
type NoReplace struct {
	// OnFallback, if set, is called once, when the first rename finds
	// RENAME_NOREPLACE unsupported, with the destination's folder.
	OnFallback func(dir string)
	// OnNoLinks, if set, is called once, when a file's rename finds hard
	// links unsupported too (check-then-rename from then on).
	OnNoLinks func(dir string)

	unsupported atomic.Bool // no RENAME_NOREPLACE: link and unlink
	noLinks     atomic.Bool // no hard links either: check, then rename
}

// Rename renames src to dst unless dst exists: then it fails with an
// *os.LinkError wrapping fs.ErrExist, and src is left where it was.
func (n *NoReplace) Rename(src, dst string) error {
	if !n.unsupported.Load() {
		err := unix.Renameat2(unix.AT_FDCWD, src, unix.AT_FDCWD, dst, unix.RENAME_NOREPLACE)
		if err == nil {
			return nil
		}
		if !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOSYS) && !errors.Is(err, unix.ENOTSUP) {
			return &os.LinkError{Op: "rename", Old: src, New: dst, Err: err}
		}
		// EINVAL is also what a bad rename (a folder into itself) returns;
		// the fallback below reports that case again through plain rename.
		if n.unsupported.CompareAndSwap(false, true) && n.OnFallback != nil {
			n.OnFallback(filepath.Dir(dst))
		}
	}
	if !n.noLinks.Load() {
		err := linkUnlink(src, dst)
		if !errors.Is(err, unix.EPERM) && !errors.Is(err, unix.ENOTSUP) && !errors.Is(err, unix.ENOSYS) {
			return err
		}
		// A folder cannot be hard-linked anywhere (EPERM): that says
		// nothing of the file system, so only a file's refusal turns the
		// links off for every later rename.
		if st, serr := os.Lstat(src); serr != nil || !st.IsDir() {
			if n.noLinks.CompareAndSwap(false, true) && n.OnNoLinks != nil {
				n.OnNoLinks(filepath.Dir(dst))
			}
		}
	}
	if _, err := os.Lstat(dst); err == nil {
		return &os.LinkError{Op: "rename", Old: src, New: dst, Err: fs.ErrExist}
	}
	return os.Rename(src, dst)
}

// linkUnlink is a never-replacing rename out of two atomic steps (see
// NoReplace). Its errors are *os.LinkError with the cause: fs.ErrExist
// (dst taken), fs.ErrNotExist (src gone, or taken by another renamer
// between our link and our unlink), EPERM/ENOTSUP/ENOSYS (no hard links
// here: nothing was changed).
//
// On NFS a request whose reply was lost is sent again, and the server may
// answer the repeat with the first one's effect as an error: a repeated
// link says EEXIST although dst is our own new name of src (same file:
// go on), and a repeated unlink says ENOENT although it was ours that
// removed src (dst is then the file's only name: keep it). Only a dst
// that is one of several names of the file is removed after a failed
// unlink, so the file can never be left without a name.
func linkUnlink(src, dst string) error {
	if err := unix.Link(src, dst); err != nil {
		if !errors.Is(err, unix.EEXIST) || !sameFile(src, dst) {
			return &os.LinkError{Op: "rename", Old: src, New: dst, Err: err}
		}
	}
	err := unix.Unlink(src)
	if err == nil {
		return nil
	}
	nlink, serr := freshNlink(dst)
	if serr != nil {
		return &os.LinkError{Op: "rename", Old: src, New: dst, Err: errors.Join(err, serr)}
	}
	if errors.Is(err, unix.ENOENT) && nlink == 1 {
		return nil // our unlink, repeated: dst is the file's one name
	}
	// src is still there (the unlink failed), or another renamer unlinked
	// it first and keeps its own name: ours is a second name, and goes.
	if nlink > 1 {
		if rerr := unix.Unlink(dst); rerr != nil {
			// Not fs.ErrNotExist, whatever the unlink said: dst is still
			// here, a second name of a file someone else may have taken,
			// and a caller must not take it for its own (spool.Claim
			// accepts an ENOENT whose destination exists as a repeated
			// rename).
			return &os.LinkError{Op: "rename", Old: src, New: dst,
				Err: fmt.Errorf("the source went while it was being renamed (%v), and the second name could not be removed: %w", err, rerr)}
		}
	}
	return &os.LinkError{Op: "rename", Old: src, New: dst, Err: err}
}

// freshNlink is the link count of path as the file server has it now:
// read through a new open (on NFS an open revalidates the attributes that
// a stat may answer from the cache of the link's reply).
func freshNlink(path string) (uint64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return 0, err
	}
	return uint64(st.Nlink), nil
}

// sameFile: a and b are names of one file.
func sameFile(a, b string) bool {
	sa, err := os.Lstat(a)
	if err != nil {
		return false
	}
	sb, err := os.Lstat(b)
	return err == nil && os.SameFile(sa, sb)
}

// createTemp creates dir/.NAME.hidiffd-tmp-XXXXXXXX exclusively. A long
// name is cut so that the temporary name stays under NAME_MAX (255 bytes).
func createTemp(dir, name string, perm fs.FileMode) (*os.File, string, error) {
	short := name
	if len(short) > 200 {
		short = short[:200]
	}
	var err error
	for range 10 {
		var r [4]byte
		_, _ = rand.Read(r[:])
		p := filepath.Join(dir, "."+short+TempMarker+hex.EncodeToString(r[:]))
		var f *os.File
		f, err = os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
		if err == nil {
			return f, p, nil
		}
		if !errors.Is(err, fs.ErrExist) {
			return nil, "", err
		}
	}
	return nil, "", err
}
