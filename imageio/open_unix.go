//go:build unix

package imageio

import (
	"os"
	"syscall"
)

// openNoFollow refuses a symlink at the last path element (ELOOP) and never
// blocks on a fifo that replaced the file after our Lstat.
func openNoFollow(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
}
