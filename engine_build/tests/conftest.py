from __future__ import annotations

import sys
from pathlib import Path

# Tests run from anywhere: make the repository root importable.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
