"""HI-Diff network modules. Module and parameter names follow the official
release (zhengchen1999/HI-Diff) so that its checkpoints load strictly."""
