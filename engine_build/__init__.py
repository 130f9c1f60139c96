"""engine_build: the PyTorch side of hidiffd.

The HI-Diff network (NeurIPS 2023) as released, strict loading of the official
checkpoints, export to the ONNX contract of docs/ARCHITECTURE.md, a PyTorch
reference for the Go daemon, and two-stage training (train.py).
"""
