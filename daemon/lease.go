package daemon

import (
	"context"
	"time"

	"github.com/rs/zerolog"

	"hidiffd/spool"
)

// Several daemons on one spool (issue 15): this file keeps the instance's
// lease alive and takes over the frames of instances whose lease expired.
// The rules (claims, leases, takeover) are the spool package's; here is
// only the loop that drives them.

// startLease sweeps once (instances that died while this one was down) and
// then heartbeats and sweeps every lease/3 until the returned stop is
// called. It runs from the spool's opening on, through a model load that
// may take hours (a TensorRT engine build), so the lease never lapses
// while the daemon starts.
func (d *Daemon) startLease(log zerolog.Logger, lease time.Duration) (stop func()) {
	s := d.spool
	if lease <= 0 {
		lease = spool.DefaultLease // as spool.Open took it
	}
	log.Info().Str("instance", s.Instance()).Dur("lease", lease).
		Dur("clock_offset", s.ClockSkew()).Msg("lease taken")
	// Open refused an offset beyond the margin; half of it is a warning
	// that the clocks are drifting towards that.
	if off, margin := s.ClockSkew().Abs(), d.cfg.Load().Spool.LeaseMargin.Duration; margin > 0 && off > margin/2 {
		log.Warn().Dur("clock_offset", s.ClockSkew()).Dur("lease_margin", margin).
			Msg("this host's clock and the spool's file times differ by more than half of spool.lease_margin: check time sync (NTP)")
	}
	d.sweep(log)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		// The real clock, not d.opts.Clock: leases are file mtimes the
		// other daemons read, whatever this daemon's tests do with time.
		t := time.NewTicker(lease / 3)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			if err := s.Heartbeat(); err != nil {
				log.Error().Err(err).Msg("lease heartbeat")
			}
			d.sweep(log)
		}
	}()
	// A heartbeat or sweep blocked on the file system (an NFS server
	// gone) must not hold the stop for ever: after a lease the daemon
	// closes anyway; its lease then expires and another daemon takes over
	// what is left.
	return func() {
		cancel()
		select {
		case <-done:
		case <-time.After(lease):
			log.Error().Dur("waited", lease).Msg("the lease loop did not stop (a heartbeat or sweep is blocked on the spool's file system); stopping without it")
		}
	}
}

// sweep takes over expired instances' frames and logs what moved.
func (d *Daemon) sweep(log zerolog.Logger) {
	took, err := d.spool.Sweep()
	if err != nil {
		log.Error().Err(err).Msg("taking over expired instances")
	}
	for _, t := range took {
		if t.Requeued+t.Finished == 0 {
			continue
		}
		if t.Instance == d.spool.Instance() {
			log.Warn().Int("requeued", t.Requeued).Int("finished", t.Finished).
				Msg("recovered frames an earlier takeover could not move")
			continue
		}
		log.Warn().Str("dead_instance", t.Instance).Dur("lease_age", t.Age).
			Int("requeued", t.Requeued).Int("finished", t.Finished).Msg("took over an expired instance's frames")
	}
}
