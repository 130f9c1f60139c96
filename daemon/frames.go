package daemon

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"syscall"
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
}

// Failure stages recorded in error.json and the failed-total metric, besides
// imageio's probe/decode/encode.
const (
	stagePipeline = "pipeline"
	stagePanic    = "panic"
)

// decodeLoop receives names from intake, claims and decodes them, and hands
// decoded frames to the network loop. It runs ahead of the network by one
// frame, so the network does not wait for JPEG decoding.
func (d *Daemon) decodeLoop(netCh chan<- *frame) {
	defer close(netCh)
	ready := d.intake.Ready()
	for {
		// Transient trouble (disk full...) pauses intake for everyone.
		if w := d.backoff.remaining(); w > 0 {
			select {
			case <-d.stop:
				return
			case <-time.After(w):
			}
		}
		var name string
		var ok bool
		select {
		case <-d.stop:
			return
		case name, ok = <-ready:
			if !ok {
				return
			}
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
			return
		}
	}
}

// claimAndDecode claims name and decodes it; nil means the file was dealt
// with here (gone, failed, released).
func (d *Daemon) claimAndDecode(name string) *frame {
	cfg := d.cfg.Load()
	job, err := d.spool.Claim(name)
	d.intake.Done(name) // claimed, gone or busy: the watcher may forget it
	switch {
	case err == nil:
	case errors.Is(err, spool.ErrGone): // also ErrBusy: found again by a later scan
		d.log.Debug().Str("name", name).Err(err).Msg("not claimed")
		return nil
	default:
		wait := d.backoff.fail(cfg.Retry.InitialBackoff.Duration, cfg.Retry.MaxBackoff.Duration)
		d.log.Error().Str("name", name).Err(err).Dur("backoff", wait).Msg("claim failed; pausing intake")
		return nil
	}
	f := &frame{job: job, start: time.Now()}
	t0 := time.Now()
	img, err := safeDecode(job.Path, imageio.Limits{MaxPixels: cfg.Spool.MaxPixels})
	f.decode = time.Since(t0)
	if err != nil {
		ie := imageio.AsError(err, imageio.StageDecode)
		switch {
		case ie.Code == imageio.CodeNotFound:
			// Removed from work/ behind our back: nothing left to move.
			d.log.Warn().Str("name", name).Str("reason", ie.Reason).Msg("claimed file vanished")
		case transientRead(err):
			d.retry(job, ie.Stage, err)
		default:
			d.fail(job, ie.Stage, ie.Reason)
		}
		return nil
	}
	f.img = img
	d.metrics.observe(StageDecode, f.decode)
	return f
}

// transientRead picks the read errors that are the machine's, not the
// file's: out of descriptors or memory, an interrupted call, a device error.
// Every other read failure (permission, a file that is not an image) fails
// the frame.
func transientRead(err error) bool {
	for _, e := range []syscall.Errno{syscall.EMFILE, syscall.ENFILE, syscall.ENOMEM,
		syscall.EINTR, syscall.EAGAIN, syscall.EIO, syscall.ESTALE, syscall.ETIMEDOUT} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
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

// networkLoop runs the model on one frame at a time, on one locked OS
// thread: GPU contexts are per thread, and serialising the network keeps its
// memory to one frame's worth.
func (d *Daemon) networkLoop(ctx context.Context, pipe *deblur.Pipeline, netCh <-chan *frame, encCh chan<- *frame) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	defer close(encCh)
	for f := range netCh {
		if d.stopping() {
			// Decoded but not started: not "in flight"; back to inbox/.
			d.release(f.job, "draining before the network started")
			continue
		}
		cfg := d.cfg.Load()
		if err := pipe.SetOptions(d.pipelineOptions(cfg)); err != nil {
			// Live tile/overlap change that this model cannot take: keep
			// the previous options (validated at start) and say so.
			d.log.Error().Err(err).Msg("model.tile/overlap from the reloaded config do not fit the model; keeping the previous ones")
		}
		d.clocks.network.busy()
		out, st, err := d.runPipeline(ctx, pipe, f)
		d.clocks.network.idle()
		d.gpu.frameDone(st, err)
		if err != nil {
			switch {
			case isDrainWait(err):
				d.release(f.job, "drain began while it waited for the GPU")
			case errIsCancel(err) || ctx.Err() != nil:
				d.release(f.job, "cancelled in the network (drain timeout)")
			default:
				d.fail(f.job, stagePipeline, err.Error())
			}
			continue
		}
		f.out, f.stats, f.img.Pix = out, st, nil // drop the input pixels early
		d.metrics.observe(StagePrior, st.Prior)
		d.metrics.observe(StageTransformer, st.Transform)
		if st.NonFinite > 0 {
			d.log.Warn().Str("name", f.job.Name).Int("values", st.NonFinite).
				Msg("network produced NaN/Inf values (clamped); check the engine's precision")
		}
		if st.ConstantTiles > 0 {
			d.log.Warn().Str("name", f.job.Name).Int("tiles", st.ConstantTiles).
				Msg("network produced flat tiles from non-flat input; check the engine's precision")
		}
		encCh <- f
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
		d.clocks.encode.idle()
	}
}

func (d *Daemon) writeAndFinish(f *frame) {
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
		if spool.IsTransient(err) {
			d.retry(f.job, imageio.StageEncode, err)
		} else {
			d.fail(f.job, imageio.StageEncode, imageio.AsError(err, imageio.StageEncode).Reason)
		}
		return
	}
	if err := d.spool.Finish(f.job); err != nil {
		if errors.Is(err, spool.ErrGone) {
			d.log.Warn().Str("name", f.job.Name).Err(err).Msg("output written but the original vanished from work/")
			return
		}
		// The output is in out/; the original goes back to inbox/ and the
		// retry rewrites the same output.
		d.retry(f.job, "spool", err)
		return
	}
	d.backoff.ok()
	total := time.Since(f.start)
	d.processed.Add(1)
	d.metrics.Processed.Inc()
	d.metrics.observe(StageEncode, encode)
	d.metrics.observe(StageTotal, total)
	d.log.Info().
		Str("name", f.job.Name).
		Int("width", f.img.W).
		Int("height", f.img.H).
		Str("backend", d.backend.Name()).
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
	d.failed.Add(1)
	d.metrics.Failed.WithLabelValues(stage).Inc()
	d.log.Warn().Str("name", job.Name).Str("stage", stage).Str("reason", reason).Msg("failed")
}

// retry releases a frame to inbox/ after a transient error and backs off.
func (d *Daemon) retry(job *spool.Job, stage string, err error) {
	cfg := d.cfg.Load()
	wait := d.backoff.fail(cfg.Retry.InitialBackoff.Duration, cfg.Retry.MaxBackoff.Duration)
	d.retried.Add(1)
	d.metrics.Retried.Inc()
	d.log.Error().Str("name", job.Name).Str("stage", stage).Err(err).Dur("backoff", wait).
		Msg("transient error; original returned to inbox/ for a retry")
	d.releaseQuiet(job)
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
