//go:build !cgo

package gpu

import "errors"

// nvmlMonitor stands in for the NVML reader in a build without cgo: go-nvml
// needs cgo to call the library, so such a binary reports NVML as absent
// and "auto" goes on to the Jetson reader or none.
type nvmlMonitor struct {
	noneMonitor
	device string
}

func openNVML(Options) (*nvmlMonitor, error) {
	return nil, errors.New("NVML support needs a cgo build (CGO_ENABLED=1)")
}

func nvmlCount(string) (int, error) {
	return 0, errors.New("NVML support needs a cgo build (CGO_ENABLED=1)")
}
