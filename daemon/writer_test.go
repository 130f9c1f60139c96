package daemon

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"hidiffd/internal/clock/clocktest"
)

// TestPausedWriterIsNotFailed (issue 12): a camera that writes a frame in
// place and pauses for longer than spool.settle has its half file claimed
// and found truncated. The daemon waits one more settle period (on its
// clock) before judging; the writer goes on meanwhile, so the frame goes
// back to inbox/, settles again and is deblurred whole, instead of landing
// in failed/ "truncated" with its writer still writing into it there.
func TestPausedWriterIsNotFailed(t *testing.T) {
	clock := clocktest.New()
	in := start(t, setup{clock: clock})
	in.waitReady()
	data := testJPEG(t, 64, 48)
	f, err := os.OpenFile(filepath.Join(in.dir("inbox"), "w.jpg"), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write(data[:len(data)/2]); err != nil {
		t.Fatal(err)
	}
	// The writer pauses: the half file is judged complete and claimed, and
	// the daemon waits on its clock before failing it.
	in.eventually(10*time.Second, "the half file claimed and under a second look", func() bool {
		return in.has("work", "w.jpg") && len(clock.Deadlines()) > 0
	})
	if _, err := f.Write(data[len(data)/2:]); err != nil { // into work/w.jpg: same file
		t.Fatal(err)
	}
	f.Close()
	clock.Advance(time.Second)
	in.eventually(10*time.Second, "w.jpg deblurred whole", func() bool { return in.has("done", "w.jpg") })
	if w, h := in.imageSize("out", "w.jpg"); w != 64 || h != 48 {
		t.Errorf("out/w.jpg is %dx%d", w, h)
	}
	if in.has("failed", "w.jpg") {
		t.Error("the frame went to failed/")
	}
	if len(in.logs.lines("file is still being written; returned to inbox/ to settle again")) != 1 {
		t.Error("no log line for the frame put back")
	}
	in.stop()
}

// TestClaimRechecksTheFile: a file judged complete that changes while it
// waits in the queue (its writer resumed) is put back at the claim, not
// decoded half written.
func TestClaimRechecksTheFile(t *testing.T) {
	fb, entered, proceed := holdFirst()
	in := start(t, setup{backend: fb})
	in.waitReady()
	in.drop("a.jpg", testJPEG(t, 32, 32))
	<-entered // a.jpg in the network
	in.drop("b.jpg", testJPEG(t, 32, 32))
	in.eventually(10*time.Second, "b.jpg decoded ahead", func() bool { return in.has("work", "b.jpg") })
	// c.jpg: half written, judged complete, queued behind b.jpg.
	data := testJPEG(t, 48, 40)
	path := filepath.Join(in.dir("inbox"), "c.jpg")
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	third := len(data) / 3
	f.Write(data[:third])
	in.eventually(10*time.Second, "c.jpg queued", func() bool { return in.metric("hidiffd_queue_depth") == "1" })
	f.Write(data[third : 2*third]) // the writer resumes while c.jpg waits
	close(proceed)
	in.eventually(10*time.Second, "c.jpg put back at the claim", func() bool {
		return len(in.logs.lines("file changed after intake judged it complete (still being written?); returned to inbox/ to settle again")) > 0
	})
	f.Write(data[2*third:])
	f.Close()
	in.eventually(10*time.Second, "c.jpg deblurred whole", func() bool { return in.has("done", "c.jpg") })
	if w, h := in.imageSize("out", "c.jpg"); w != 48 || h != 40 {
		t.Errorf("out/c.jpg is %dx%d", w, h)
	}
	if in.has("failed", "c.jpg") {
		t.Error("c.jpg went to failed/")
	}
	in.stop()
}
