"""examples/rl-loop is a folder of scripts, not a package: its modules are imported from the folder."""

from __future__ import annotations

import sys
from pathlib import Path

RL_LOOP = Path(__file__).resolve().parents[2] / "examples" / "rl-loop"
if str(RL_LOOP) not in sys.path:
    sys.path.insert(0, str(RL_LOOP))
