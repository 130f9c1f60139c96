package spool

// Helpers only the tests use; production code addresses frames by Job and
// never needs a folder's path.

// Dir is the path of a state folder ("inbox", "work", "out", "done",
// "failed"); an unknown state yields "".
func (s *Spool) Dir(state string) string { return s.dirs[state] }

// suffixed is name for i == 0, else the name with ".i" before the extension:
// frame.jpg -> frame.1.jpg, frame -> frame.1 (candidate without a length cap).
func suffixed(name string, i int) string { return candidate(name, i, 0) }
