package archtest

import (
	"bytes"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// trackedFiles lists the files git tracks, relative to the module root.
// Without git or outside a work tree (an unpacked tarball) the caller
// skips: what is tracked is then unknown.
func trackedFiles(t *testing.T, root string) []string {
	t.Helper()
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("git not found: the tracked files are unknown")
	}
	out, err := exec.Command("git", "-C", root, "ls-files", "-z").Output()
	if err != nil {
		t.Skipf("not a git work tree (%v): the tracked files are unknown", err)
	}
	var files []string
	for _, f := range strings.Split(string(out), "\x00") {
		if f != "" {
			files = append(files, f)
		}
	}
	if len(files) == 0 {
		t.Skip("git tracks no files here")
	}
	return files
}

// pathStart is what may come right before an absolute path in a file: the
// start of a line, white space, a quote or an opening delimiter, "=", ":"
// or ",". Anything else (a letter, ".", "/", "$VAR", "${VAR}", "$(cmd)")
// makes it the tail of a relative or variable path, such as spool/work/
// or $root/work/, which is no machine's path.
const pathStart = "(?:^|[\\s\"'`(\\[{<=:,])"

// machinePaths are the folders a file names only when it was written with
// a path of the machine it was written on: the checkout's parent folder
// (this project's machines), root's and users' home folders (the lent
// device machine writes under root's). The checkout's own folder and its
// parent are added at run time (TestNoMachinePaths).
// (Written as names, so that this file does not name them itself.)
var machineFolders = []string{"work", "root", "home", "Users"}

var machinePaths = regexp.MustCompile(pathStart + "(/(?:" + strings.Join(machineFolders, "|") + ")/)")

// genericFolders are parents a checkout may have that tracked files name
// for other reasons (the chroot of scripts/test-deb.sh writes /tmp/...);
// a checkout under one of them checks only its own folder.
var genericFolders = map[string]bool{
	"/": true, "/tmp": true, "/var/tmp": true, "/var": true, "/var/lib": true, "/srv": true,
	"/opt": true, "/usr": true, "/mnt": true, "/media": true, "/home": true, "/root": true,
}

// pathAllowed lists the tracked files that may name such a path, and why.
// Empty: no file needs to. A file is added here only with its reason, and
// never for a path of the machine it was written on.
var pathAllowed = map[string]string{}

// TestNoMachinePaths: no tracked file names an absolute path of the machine
// it was written on. A clone elsewhere has none of them: data is found
// relative to the checkout (../shared/data/photos) or through a variable
// ($HIDIFFD_PHOTOS, $OUT).
func TestNoMachinePaths(t *testing.T) {
	root := moduleRoot(t)
	files := trackedFiles(t, root)

	// Each pattern with the literals one of which a match must contain,
	// so that most files (and the large binary ones) skip the regexp.
	type check struct {
		re      *regexp.Regexp
		needles []string
	}
	static := check{re: machinePaths}
	for _, d := range machineFolders {
		static.needles = append(static.needles, "/"+d+"/")
	}
	checks := []check{static}
	if top, err := filepath.EvalSymlinks(root); err == nil && !genericFolders[filepath.ToSlash(top)] {
		top = filepath.ToSlash(top)
		here := []string{top}
		if parent := path.Dir(top); !genericFolders[parent] {
			here = append(here, parent)
		}
		quoted := make([]string, len(here))
		for i, h := range here {
			quoted[i] = regexp.QuoteMeta(h)
		}
		re := regexp.MustCompile(pathStart + "((?:" + strings.Join(quoted, "|") + "))(?:/|$|[\\s\"'`)\\]}>,;:])")
		checks = append(checks, check{re, here})
	}

	for _, f := range files {
		if _, ok := pathAllowed[f]; ok {
			continue
		}
		b, err := os.ReadFile(filepath.Join(root, filepath.FromSlash(f)))
		if err != nil {
			if os.IsNotExist(err) {
				continue // deleted in the work tree, not yet in the index
			}
			t.Fatal(err)
		}
		reported := map[int]bool{} // offsets: the checks overlap
		for _, c := range checks {
			found := false
			for _, n := range c.needles {
				found = found || bytes.Contains(b, []byte(n))
			}
			if !found {
				continue
			}
			for _, m := range c.re.FindAllSubmatchIndex(b, 3) {
				if reported[m[2]] {
					continue
				}
				reported[m[2]] = true
				line := 1 + bytes.Count(b[:m[2]], []byte("\n"))
				end := m[3]
				for end < len(b) && end-m[2] < 80 && !bytes.ContainsRune([]byte(" \t\n\"'`),]"), rune(b[end])) {
					end++
				}
				t.Errorf("%s:%d: names an absolute path of a machine, %q: write it relative to the checkout, "+
					"through a variable, or as a path of the installed product", f, line, b[m[2]:end])
			}
		}
	}
}

// designNames are the file names of design documents. (Split, so that
// this file does not cite them itself.)
var designNames = []string{"DESIGN" + ".md", "ARCHITECTURE" + ".md"}

// designRefs returns each reference to a design document in b: the name
// with the path characters written right before it, and its offset.
func designRefs(b []byte) (refs []string, at []int) {
	isPathChar := func(c byte) bool {
		return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("_./-", c) >= 0
	}
	for _, name := range designNames {
		for off := 0; ; {
			i := bytes.Index(b[off:], []byte(name))
			if i < 0 {
				break
			}
			end := off + i + len(name)
			start := off + i
			for start > 0 && isPathChar(b[start-1]) {
				start--
			}
			refs, at = append(refs, string(b[start:end])), append(at, start)
			off = end
		}
	}
	return refs, at
}

// TestDesignReferences: every reference to a design document (by file
// name, see designNames) resolves to a tracked file, read relative to the
// referring file's folder or to the repository root. The design of record
// is docs/ARCHITECTURE.md.
func TestDesignReferences(t *testing.T) {
	root := moduleRoot(t)
	files := trackedFiles(t, root)
	tracked := map[string]bool{}
	for _, f := range files {
		tracked[f] = true
	}
	if !tracked["docs/ARCHITECTURE.md"] {
		t.Fatal("docs/ARCHITECTURE.md is not tracked")
	}
	resolves := func(from, ref string) bool {
		for _, base := range []string{path.Dir(from), "."} {
			p := path.Clean(path.Join(base, ref))
			if !strings.HasPrefix(p, "../") && tracked[p] {
				return true
			}
		}
		return false
	}
	for _, f := range files {
		b, err := os.ReadFile(filepath.Join(root, filepath.FromSlash(f)))
		if err != nil {
			if os.IsNotExist(err) {
				continue
			}
			t.Fatal(err)
		}
		refs, at := designRefs(b)
		for i, ref := range refs {
			if !resolves(f, ref) {
				line := 1 + bytes.Count(b[:at[i]], []byte("\n"))
				t.Errorf("%s:%d: %q is no file of the repository: cite docs/ARCHITECTURE.md", f, line, ref)
			}
		}
	}
}
