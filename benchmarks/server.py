"""Shared by the server benchmarks: the real app on a free local port, and the server's resident memory."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]  # the app, and the launcher the end-to-end tests use

from app_server import running_app, shape_png, upload_dir  # noqa: E402

__all__ = ["rss_mb", "running_app", "shape_png", "upload_dir"]


def rss_mb(field: str = "VmRSS") -> float:
    """This process's resident memory in MB (the app is served from this process)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")
