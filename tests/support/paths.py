"""Where the shared sample screens and cron cases are."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def shared_dir() -> Path:
    """The `shared` folder beside the repo, or APPTASKS_SHARED_DIR."""
    override = os.environ.get("APPTASKS_SHARED_DIR")
    return Path(override) if override else REPO.parent / "shared"


def screen(name: str) -> str:
    return (shared_dir() / "screens" / name).read_text(encoding="utf-8")
