package daemon

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"hidiffd/config"
	"hidiffd/deblur"
	"hidiffd/watch"
)

// TestStartupPhaseNamedInError: a start that fails says which phase failed,
// keeps the cause (errors.Is), and undoes the phases before it (the spool
// lock is free again: a second start on the same spool gets past "spool").
func TestStartupPhaseNamedInError(t *testing.T) {
	errBackend := errors.New("fake backend: no device")
	errIntake := errors.New("fake intake: cannot watch")
	cases := []struct {
		name      string
		backend   error
		intake    error
		wantPhase string
		wantIs    error

		spoolIsFile bool
	}{
		{"backend", errBackend, nil, "start-up phase backend: ", errBackend, false},
		{"intake", nil, errIntake, "start-up phase intake: ", errIntake, false},
		{"spool root is a file", nil, nil, "start-up phase spool: ", nil, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "c.toml")
			doc := testConfig("")
			if c.spoolIsFile {
				// A spool root that is a file: spool.Open cannot make its folders.
				os.WriteFile(filepath.Join(dir, "spool"), []byte("not a folder"), 0o644)
			}
			os.WriteFile(path, []byte(doc), 0o644)
			cfg, err := config.Load(path)
			if err != nil {
				t.Fatalf("%v\n%s", err, doc)
			}
			opts := Options{
				Config: cfg, ConfigPath: path, LogOutput: &syncBuffer{}, Signals: make(chan os.Signal), SkipWarmup: true,
				OpenBackend: func(*config.Config) (deblur.Backend, error) {
					if c.backend != nil {
						return nil, c.backend
					}
					return &fakeBackend{}, nil
				},
				NewIntake: func(string, *config.Config, watch.Logger) (Intake, error) {
					if c.intake != nil {
						return nil, c.intake
					}
					return stoppingIntake{ch: make(chan string)}, nil
				},
			}
			for attempt := 1; attempt <= 2; attempt++ { // the second: the first undid its phases
				err = Run(context.Background(), opts)
				if err == nil || !strings.HasPrefix(err.Error(), c.wantPhase) {
					t.Fatalf("attempt %d: Run = %v; want it to start with %q", attempt, err, c.wantPhase)
				}
				if c.wantIs != nil && !errors.Is(err, c.wantIs) {
					t.Errorf("attempt %d: %v does not wrap %v", attempt, err, c.wantIs)
				}
			}
		})
	}
}
