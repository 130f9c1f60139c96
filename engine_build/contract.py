"""The ONNX contract of docs/ARCHITECTURE.md, in one place."""
from __future__ import annotations

OPSET = 17
PRIOR_TOKENS = 16
PRIOR_CHANNELS = 256
MODEL_NAME = "HI-Diff"
EXPORT_VERSION = "1"

PRIOR_INPUTS = ("blur", "noise")
PRIOR_OUTPUTS = ("prior",)
TRANSFORMER_INPUTS = ("blur", "prior")
TRANSFORMER_OUTPUTS = ("sharp",)
