package deblur

import "fmt"

// CheckImage checks an image tensor handed to a backend: [1,3,H,W] with H and
// W multiples of the pad multiple. Backends call it before the runtime, which
// would report these obscurely, or not at all (a graph may accept an
// unaligned size and answer with a misaligned, wrong image). name is the
// tensor's name in the contract ("blur").
func (m ModelInfo) CheckImage(name string, t Tensor) error {
	if len(t.Shape) != 4 || t.Shape[0] != 1 || t.Shape[1] != 3 || t.Shape[2] <= 0 || t.Shape[3] <= 0 {
		return fmt.Errorf("%s has shape %v, expected [1 3 H W]", name, t.Shape)
	}
	if err := t.Validate(); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	pad := int64(m.PadMultiple)
	if pad > 1 && (t.Shape[2]%pad != 0 || t.Shape[3]%pad != 0) {
		return fmt.Errorf("%s is %dx%d (HxW); both must be multiples of %d (pad the image first)",
			name, t.Shape[2], t.Shape[3], pad)
	}
	return nil
}

// CheckPrior checks a noise or prior tensor: [1, PriorTokens, PriorChannels].
func (m ModelInfo) CheckPrior(name string, t Tensor) error {
	tok, ch := int64(m.PriorTokens), int64(m.PriorChannels)
	if len(t.Shape) != 3 || t.Shape[0] != 1 || t.Shape[1] != tok || t.Shape[2] != ch {
		return fmt.Errorf("%s has shape %v, expected [1 %d %d]", name, t.Shape, tok, ch)
	}
	if err := t.Validate(); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	return nil
}
