"""Where datasets live: ``--data-dir``, else ``$DPAL_DATA``, else a per-user cache directory."""

from __future__ import annotations

import os
from pathlib import Path


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/dpal/datasets`` (``~/.cache/dpal/datasets`` when unset)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    return Path(base) / "dpal" / "datasets"


def resolve_data_root(data_dir: str | os.PathLike[str] | None = None) -> Path:
    if data_dir:
        return Path(data_dir).expanduser()
    env = os.environ.get("DPAL_DATA")
    if env:
        return Path(env).expanduser()
    return default_cache_dir()
