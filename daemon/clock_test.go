package daemon

import (
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// blockWrites makes creating files in dir fail with a transient error
// (EPERM, EACCES) while Lstat inside it still works: the output side of a
// spool whose disk refuses writes. Root, which ignores permissions, gets
// the immutable attribute; others a folder they may search but not write.
// The returned function undoes it.
func blockWrites(t *testing.T, dir string) func() {
	t.Helper()
	if os.Geteuid() != 0 {
		if err := os.Chmod(dir, 0o100); err != nil {
			t.Fatal(err)
		}
		return func() { os.Chmod(dir, 0o750) }
	}
	set := func(on bool) error {
		f, err := os.Open(dir)
		if err != nil {
			return err
		}
		defer f.Close()
		flags, err := unix.IoctlGetInt(int(f.Fd()), unix.FS_IOC_GETFLAGS)
		if err != nil {
			return err
		}
		if on {
			flags |= fsImmutableFL
		} else {
			flags &^= fsImmutableFL
		}
		return unix.IoctlSetPointerInt(int(f.Fd()), unix.FS_IOC_SETFLAGS, flags)
	}
	if err := set(true); err != nil {
		t.Skipf("cannot make %s immutable here (%v)", dir, err)
	}
	undone := false
	undo := func() {
		if !undone {
			undone = true
			if err := set(false); err != nil {
				t.Errorf("clear the immutable attribute of %s: %v", dir, err)
			}
		}
	}
	t.Cleanup(undo)
	return undo
}

// fsImmutableFL is FS_IMMUTABLE_FL of linux/fs.h (chattr +i).
const fsImmutableFL = 0x00000010
