"""Where the public evaluation data lives (`shared/data` beside the repository by default).

Training, evaluation and benchmark scripts take the path as a flag; this is only
their default, overridable with $GEARSHIFT_DATA_DIR.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[3]


def shared_data_dir() -> Path:
    env = os.environ.get("GEARSHIFT_DATA_DIR")
    return Path(env) if env else REPO_ROOT.parent / "shared" / "data"
