"""What every measured report carries and how it is written: the machine it ran on, and an atomic
JSON write. Used by evaluation, benchmarks, training summaries and the demo alike."""

from __future__ import annotations

import json
import os
import platform
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .store.fsutil import atomic_write_text


def machine_info() -> dict[str, Any]:
    """The machine a figure was measured on: platform, CPU, core count, torch and its GPU (if any)."""
    import torch

    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def save_report(report: dict[str, Any], path: Path) -> None:
    """Write ``report`` as indented JSON (dataclasses as dicts), atomically."""
    atomic_write_text(path, json.dumps(report, indent=2, default=lambda o: asdict(o)) + "\n")
