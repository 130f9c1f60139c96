//go:build !unix

package imageio

import "os"

// openNoFollow: without O_NOFOLLOW we rely on the Lstat + SameFile check in
// openRegular.
func openNoFollow(path string) (*os.File, error) { return os.Open(path) }
