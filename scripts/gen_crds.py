#!/usr/bin/env python3
"""Regenerate crds/*.yaml from the operator's API models (same as `python -m rollout_operator.crdgen`).

    scripts/gen_crds.py            write crds/
    scripts/gen_crds.py --check    exit 1 if the checked-in CRDs are stale
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "operator"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rollout_operator.crdgen import main

if __name__ == "__main__":
    raise SystemExit(main())
