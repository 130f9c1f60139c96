package daemon

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"time"

	"hidiffd/deblur"
	"hidiffd/imageio"
	"hidiffd/spool"
)

// frame is one image on its way through decode -> network -> encode.
type frame struct {
	job    *spool.Job
	start  time.Time // claimed
	img    *imageio.Image
	out    deblur.Image
	stats  deblur.Stats
	decode time.Duration

	cost     int64 // estimated peak memory, charged to the budget
	reserved bool  // cost is charged: freeFrame gives it back

	w *worker // the worker whose network ran it
}

// freeFrame gives a frame's memory back to the budget once it has left the
// pipeline (written, failed or returned to inbox/).
//
// The garbage collector is run at each point where a frame's big buffers
// become garbage (here, after decoding, after the network): a large
// allocation that follows would otherwise be made before the collector
// catches up, and the process would briefly hold both. The buffers hold no
// pointers, so a collection costs about a millisecond.
func (d *Daemon) freeFrame(f *frame) {
	if f.reserved {
		f.reserved = false
		runtime.GC()
		d.mem.release(f.cost)
		d.remeasure()
	}
}

// Failure stages recorded in error.json and the failed-total metric, besides
// imageio's probe/decode/encode.
const (
	stagePipeline = "pipeline"
	stagePanic    = "panic"
)

// decodeLoop receives names from intake, claims and decodes them, and hands
// decoded frames to the network loop. It runs ahead of the network by one
// frame, so the network does not wait for JPEG decoding. It claims nothing
// while the output side is paused (backoff), and holds back a frame that
// came back for a retry until its own backoff has passed, taking other
// frames meanwhile.
func (d *Daemon) decodeLoop(netCh chan<- *frame) {
	defer close(netCh)
	ready := d.intake.Ready()
	var held []string // delivered names not yet due for their retry
	for {
		if !d.waitPause("") {
			return
		}
		name, ok := d.nextName(ready, &held)
		if !ok {
			return
		}
		// The pause may have begun while this loop waited for a name.
		if !d.waitPause(name) {
			return
		}
		if w := d.backoff.due(name); w > 0 {
			d.log.Debug().Str("name", name).Dur("wait", w).Msg("frame held back until its retry backoff has passed")
			held = append(held, name)
			continue
		}
		d.clocks.decode.busy()
		f := d.claimAndDecode(name)
		d.clocks.decode.idle()
		if f == nil {
			continue
		}
		select {
		case netCh <- f:
		case <-d.stop:
			d.release(f.job, "draining before the network started")
			d.freeFrame(f)
			return
		}
	}
}

// waitPause waits while the output side is paused by the retry backoff; a
// success elsewhere ends the wait early. name is the frame in hand, if any
// (for the log). It returns false when the daemon drains.
func (d *Daemon) waitPause(name string) bool {
	for {
		w, lifted := d.backoff.paused()
		if w <= 0 {
			return true
		}
		d.log.Debug().Str("name", name).Dur("wait", w).Msg("intake paused: the output side is failing (retry backoff)")
		select {
		case <-d.stop:
			return false
		case <-lifted:
		case <-d.opts.Clock.After(w):
		}
	}
}

// nextName returns the next name to claim: a held name whose backoff has
// passed, else a new one from intake, waiting for whichever comes first.
// While as many names are held as the queue holds, it takes no new ones.
func (d *Daemon) nextName(ready <-chan string, held *[]string) (string, bool) {
	for {
		var timer <-chan time.Time
		if len(*held) > 0 {
			soonest, wait := 0, time.Duration(0)
			for i, n := range *held {
				if w := d.backoff.due(n); i == 0 || w < wait {
					soonest, wait = i, w
				}
			}
			if wait <= 0 {
				name := (*held)[soonest]
				*held = append((*held)[:soonest], (*held)[soonest+1:]...)
				return name, true
			}
			timer = d.opts.Clock.After(wait)
		}
		in := ready
		if len(*held) >= max(d.cfg.Load().Spool.QueueSize, 1) {
			in = nil
		}
		select {
		case <-d.stop:
			return "", false
		case name, ok := <-in:
			return name, ok
		case <-timer:
		}
	}
}

// claimAndDecode claims name and decodes it; nil means the file was dealt
// with here (gone, failed, released).
func (d *Daemon) claimAndDecode(name string) *frame {
	cfg := d.cfg.Load()
	judged := d.judged(name)
	job, err := d.spool.Claim(name)
	d.intake.Done(name) // claimed or gone: the watcher may forget it
	switch {
	case err == nil:
	case errors.Is(err, spool.ErrGone):
		d.log.Debug().Str("name", name).Err(err).Msg("not claimed")
		return nil
	default:
		wait := d.backoff.fail(name, cfg.Retry.InitialBackoff.Duration, cfg.Retry.MaxBackoff.Duration)
		d.log.Error().Str("name", name).Err(err).Dur("backoff", wait).Msg("claim failed; pausing intake")
		return nil
	}
	if job.Name != job.Arrived {
		d.log.Info().Str("name", job.Arrived).Str("as", job.Name).Msg("frame claimed under a new name (see README: Names)")
	}
	claimed, _ := os.Lstat(job.Path)
	if judged != nil && claimed != nil && (claimed.Size() != judged.size || !claimed.ModTime().Equal(judged.mtime)) {
		// Written to since intake judged it complete: a writer that paused
		// for longer than spool.settle. Back to inbox/ to settle again.
		d.log.Info().Str("name", job.Name).Int64("judged_size", judged.size).Int64("size", claimed.Size()).
			Msg("file changed after intake judged it complete (still being written?); returned to inbox/ to settle again")
		d.releaseQuiet(job)
		return nil
	}
	f := &frame{job: job, start: time.Now()}
	lim := imageio.Limits{MaxPixels: cfg.Spool.MaxPixels}
	// The header says how much memory the frame will take: it must fit
	// the budget before a single pixel is decoded.
	info, err := imageio.Probe(job.Path, lim)
	if err != nil {
		if !d.stillWriting(job, claimed, err) {
			d.readFailed(job, err)
		}
		return nil
	}
	f.cost = frameCost(info, cfg.Model.Tile)
	if capacity := d.memCapacity(); f.cost > capacity {
		d.fail(job, imageio.StageProbe, fmt.Sprintf("too large for the memory budget: needs an estimated %s (%s), "+
			"more than the %s that limits.memory_mib = %d leaves beside the %s the model and runtime hold",
			mib(f.cost), describeCost(info, cfg.Model.Tile), mib(capacity), cfg.Limits.MemoryMiB, mib(d.mem.fixed)))
		return nil
	}
	if !d.reserveMemory(job.Name, f.cost) {
		d.release(job, "draining while it waited for memory")
		return nil
	}
	f.reserved = true
	t0 := time.Now()
	img, err := safeDecode(job.Path, lim)
	f.decode = time.Since(t0)
	runtime.GC() // the file's bytes and the decoder's image, before the next big buffer
	if err != nil {
		d.freeFrame(f)
		if !d.stillWriting(job, claimed, err) {
			d.readFailed(job, err)
		}
		return nil
	}
	f.img = img
	for _, what := range img.Dropped {
		d.log.Warn().Str("name", job.Name).Str("dropped", what).Msg("part of the image is not carried into the result")
	}
	d.metrics.observe(StageDecode, f.decode)
	return f
}

// judgedAt is what intake saw of a file when it judged it complete.
type judgedAt struct {
	size  int64
	mtime time.Time
}

// judged asks intake what a file looked like when it was judged complete
// (nil if intake does not say).
func (d *Daemon) judged(name string) *judgedAt {
	o, ok := d.intake.(interface {
		Observed(string) (int64, time.Time, bool)
	})
	if !ok {
		return nil
	}
	size, mtime, ok := o.Observed(name)
	if !ok {
		return nil
	}
	return &judgedAt{size, mtime}
}

// stillWriting gives a frame that looks cut short (empty, truncated,
// corrupt) one more spool.settle: if it changes meanwhile, its writer had
// only paused, and the frame goes back to inbox/ to settle again instead of
// to failed/ (where the writer would go on writing). It reports whether it
// put the frame back.
func (d *Daemon) stillWriting(job *spool.Job, claimed os.FileInfo, err error) bool {
	switch imageio.AsError(err, imageio.StageDecode).Code {
	case imageio.CodeEmpty, imageio.CodeTruncated, imageio.CodeCorrupt:
	default:
		return false
	}
	if claimed == nil {
		return false
	}
	settle := d.cfg.Load().Spool.Settle.Duration
	d.log.Debug().Str("name", job.Name).Dur("settle", settle).Msg("frame looks cut short; waiting one settle period to see whether it is still being written")
	d.clocks.decode.idle()
	select {
	case <-d.opts.Clock.After(settle):
	case <-d.stop:
	}
	d.clocks.decode.busy()
	now, serr := os.Lstat(job.Path)
	if serr != nil || (now.Size() == claimed.Size() && now.ModTime().Equal(claimed.ModTime())) {
		return false
	}
	d.log.Info().Str("name", job.Name).Int64("size_at_claim", claimed.Size()).Int64("size", now.Size()).
		Msg("file is still being written; returned to inbox/ to settle again")
	d.releaseQuiet(job)
	return true
}

// readFailed deals with a claimed frame that could not be probed or
// decoded: gone, a passing trouble of the machine (retry), or the file's
// fault (failed/).
func (d *Daemon) readFailed(job *spool.Job, err error) {
	ie := imageio.AsError(err, imageio.StageDecode)
	switch {
	case ie.Code == imageio.CodeNotFound:
		// Removed from work/ behind our back: nothing left to move.
		d.log.Warn().Str("name", job.Name).Str("reason", ie.Reason).Msg("claimed file vanished")
	case spool.IsTransientRead(err):
		d.retry(job, ie.Stage, err)
	default:
		reason := ie.Reason
		if ie.Code == imageio.CodeNotRegular && strings.HasSuffix(reason, "directory") {
			reason += " (a folder is not a frame: put the images themselves into inbox/; it was moved here once nothing in it had changed for spool.settle)"
		}
		d.fail(job, ie.Stage, reason)
	}
}

// reserveMemory charges a frame's estimate to the budget, waiting while the
// frames ahead of it leave too little. It returns false if the daemon
// drains meanwhile.
func (d *Daemon) reserveMemory(name string, cost int64) bool {
	logged := false
	for {
		ok, freed := d.mem.tryReserve(cost, d.memCapacity())
		if ok {
			return true
		}
		if !logged {
			logged = true
			d.log.Info().Str("name", name).Str("estimate", mib(cost)).Str("in_flight", mib(d.mem.reserved())).
				Str("for_frames", mib(d.memCapacity())).
				Msg("waiting for memory: the frames ahead leave too little of limits.memory_mib for this one")
		}
		d.clocks.decode.idle() // waiting on the other loops is not a stall
		select {
		case <-freed:
		case <-d.stop:
			return false
		}
		d.clocks.decode.busy()
	}
}

// safeDecode is imageio.DecodeFile that turns a panic inside a decoder (a
// crafted file hitting a bug) into a failure of this frame only.
func safeDecode(path string, lim imageio.Limits) (img *imageio.Image, err error) {
	defer func() {
		if r := recover(); r != nil {
			img, err = nil, &imageio.Error{Stage: imageio.StageDecode, Code: stagePanic,
				Reason: fmt.Sprintf("decoder panicked: %v", r)}
		}
	}()
	return imageio.DecodeFile(path, lim)
}

// networkDone keeps a frame's result and drops its input pixels before it
// goes to the encoder.
func (d *Daemon) networkDone(f *frame, out deblur.Image, st deblur.Stats) {
	f.out, f.stats, f.img.Pix = out, st, nil // drop the input pixels early
	runtime.GC()                             // and collect them before the encoder's image
	d.metrics.observe(StagePrior, st.Prior)
	d.metrics.observe(StageTransformer, st.Transform)
	if st.NonFinite > 0 {
		f.w.log.Warn().Str("name", f.job.Name).Int("values", st.NonFinite).
			Msg("network produced NaN/Inf values (clamped); check the engine's precision")
	}
	if st.ConstantTiles > 0 {
		f.w.log.Warn().Str("name", f.job.Name).Int("tiles", st.ConstantTiles).
			Msg("network produced flat tiles from non-flat input; check the engine's precision")
	}
}

// runPipeline runs the pipeline with a progress hook for the watchdog and
// turns a panic into an error for this frame.
func (d *Daemon) runPipeline(ctx context.Context, pipe *deblur.Pipeline, f *frame) (out deblur.Image, st deblur.Stats, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("pipeline panicked: %v\n%s", r, debug.Stack())
		}
	}()
	return pipe.Run(ctx, deblur.Image{W: f.img.W, H: f.img.H, Pix: f.img.Pix})
}

// encodeLoop encodes and publishes results, then finishes the originals.
func (d *Daemon) encodeLoop(encCh <-chan *frame) {
	for f := range encCh {
		d.clocks.encode.busy()
		d.writeAndFinish(f)
		f.img, f.out.Pix = nil, nil
		d.freeFrame(f)
		d.clocks.encode.idle()
	}
}

func (d *Daemon) writeAndFinish(f *frame) {
	// The name decides the output's format (see imageio.OutputFormat); from
	// here on the frame is that format (its metadata is prepared for it).
	if format := imageio.OutputFormat(f.job.Name, f.img.Format); format != f.img.Format {
		d.log.Info().Str("name", f.job.Name).Str("content", f.img.Format).Str("written_as", format).
			Msg("the file's content does not match its name; the output is written in the format its name says")
		f.img.Format = format
	}
	out := &imageio.Image{W: f.out.W, H: f.out.H, Pix: f.out.Pix, Format: f.img.Format, BitDepth: f.img.BitDepth}
	t0 := time.Now()
	eo, prov := d.encodeOptions(f)
	err := d.spool.WriteOutput(f.job, func(file *os.File) error {
		bw := bufio.NewWriterSize(file, 1<<20)
		if err := safeEncode(bw, out, eo); err != nil {
			return err
		}
		if err := bw.Flush(); err != nil {
			return err
		}
		return d.outputWritten(file, f)
	})
	encode := time.Since(t0)
	if err == nil {
		err = d.writeSidecar(f, eo, prov, encode)
	}
	if err != nil {
		// An output that was published but not made durable goes again:
		// the retry writes this frame's one output anew.
		d.unpublish(f.job)
		switch {
		case errors.Is(err, spool.ErrOutputExists):
			// Someone else's file took the name after the claim: the frame
			// goes back and its next claim takes a free name. No backoff:
			// nothing is wrong with the disk.
			d.log.Warn().Str("name", f.job.Name).Err(err).Msg("output name taken by a file hidiffd did not write; frame returned to inbox/ to take another name")
			d.releaseQuiet(f.job)
			return
		case spool.IsTransient(err):
			d.retry(f.job, imageio.StageEncode, err)
		default:
			d.fail(f.job, imageio.StageEncode, imageio.AsError(err, imageio.StageEncode).Reason)
		}
		return
	}
	if err := d.spool.Finish(f.job); err != nil {
		if errors.Is(err, spool.ErrGone) {
			d.log.Warn().Str("name", f.job.Name).Err(err).Msg("output written but the original vanished from work/")
			return
		}
		// The original is still in work/: take the output back, so that
		// the retry writes this frame's one output again, and retry.
		d.unpublish(f.job)
		d.retry(f.job, "spool", err)
		return
	}
	d.backoff.succeeded(f.job.Arrived, f.job.Name)
	total := time.Since(f.start)
	d.processed.Add(1)
	d.metrics.Processed.Inc()
	d.metrics.observe(StageEncode, encode)
	d.metrics.observe(StageTotal, total)
	f.w.log.Info().
		Str("name", f.job.Name).
		Int("width", f.img.W).
		Int("height", f.img.H).
		Str("backend", f.w.backend.Name()).
		Int("tiles", f.stats.Tiles).
		Float64("decode_ms", ms(f.decode)).
		Float64("prior_ms", ms(f.stats.Prior)).
		Float64("transformer_ms", ms(f.stats.Transform)).
		Float64("encode_ms", ms(encode)).
		Float64("total_ms", ms(total)).
		Dict("provenance", ProvenanceDict(prov)).
		Msg("deblurred")
}

func safeEncode(w *bufio.Writer, img *imageio.Image, opts imageio.EncodeOptions) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = &imageio.Error{Stage: imageio.StageEncode, Code: stagePanic, Reason: fmt.Sprintf("encoder panicked: %v", r)}
		}
	}()
	return imageio.Encode(w, img, opts)
}

// fail moves a claimed frame to failed/ with its reason. If even that fails
// (failed/ not writable), the frame goes back to inbox/ and intake pauses.
func (d *Daemon) fail(job *spool.Job, stage, reason string) {
	if err := d.spool.Fail(job, stage, reason); err != nil {
		if errors.Is(err, spool.ErrGone) {
			d.log.Warn().Str("name", job.Name).Err(err).Msg("failed frame vanished before it could be moved")
			return
		}
		d.retry(job, "spool", fmt.Errorf("moving to failed/ (%s: %s): %w", stage, reason, err))
		return
	}
	d.backoff.forget(job.Arrived, job.Name)
	d.failed.Add(1)
	d.metrics.Failed.WithLabelValues(stage).Inc()
	d.log.Warn().Str("name", job.Name).Str("stage", stage).Str("reason", reason).Msg("failed")
}

// retry releases a frame to inbox/ after a transient error and backs off:
// intake pauses, and this frame is not claimed again before the backoff
// logged here has passed.
func (d *Daemon) retry(job *spool.Job, stage string, err error) {
	cfg := d.cfg.Load()
	if job.Arrived != job.Name {
		d.backoff.renamed(job.Arrived, job.Name) // its failures so far follow it
	}
	wait := d.backoff.fail(job.Name, cfg.Retry.InitialBackoff.Duration, cfg.Retry.MaxBackoff.Duration)
	d.retried.Add(1)
	d.metrics.Retried.Inc()
	d.log.Error().Str("name", job.Name).Str("stage", stage).Err(err).Dur("backoff", wait).
		Msg("transient error; original returned to inbox/ for a retry")
	d.releaseQuiet(job)
	if now := filepath.Base(job.Path); now != job.Name {
		d.backoff.renamed(job.Name, now)
	}
}

// unpublish removes a job's output before its original goes back to inbox/.
// If that fails the retry leaves a second output under the next free name:
// nothing is lost or replaced.
func (d *Daemon) unpublish(job *spool.Job) {
	if err := d.spool.Unpublish(job); err != nil {
		d.log.Error().Str("name", job.Name).Err(err).Msg("could not take back the output of a frame that is retried")
	}
}

// release returns a frame that was not processed to inbox/ (drain).
func (d *Daemon) release(job *spool.Job, why string) {
	d.log.Info().Str("name", job.Name).Str("why", why).Msg("returning frame to inbox/")
	d.releaseQuiet(job)
}

func (d *Daemon) releaseQuiet(job *spool.Job) {
	if err := d.spool.Release(job); err != nil && !errors.Is(err, spool.ErrGone) {
		// The frame stays in work/; Recover re-queues it at the next start.
		d.log.Error().Str("name", job.Name).Err(err).Msg("could not return frame to inbox/; it stays in work/ until restart")
	}
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// progressBackend marks the network loop as making progress at every backend
// call, so the watchdog measures one tile's call, not a whole large frame.
type progressBackend struct {
	deblur.Backend
	clock *stageClock
}

func (p progressBackend) Prior(ctx context.Context, blur, noise deblur.Tensor) (deblur.Tensor, error) {
	p.clock.busy()
	return p.Backend.Prior(ctx, blur, noise)
}

func (p progressBackend) Transform(ctx context.Context, blur, prior deblur.Tensor) (deblur.Tensor, error) {
	p.clock.busy()
	return p.Backend.Transform(ctx, blur, prior)
}
