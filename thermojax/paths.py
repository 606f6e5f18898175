"""Where thermojax keeps its caches (compiled XLA programs, calibration statistics)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """The project cache folder: ``$THERMOJAX_CACHE_DIR``, else ``$XDG_CACHE_HOME/thermojax``.

    Not created here; callers create the subfolder they write into.
    """
    explicit = os.environ.get("THERMOJAX_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "thermojax"
