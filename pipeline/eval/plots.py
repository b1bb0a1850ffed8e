"""Charts of evaluation reports."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def plot_recall_curves(report: dict[str, Any], path: Path) -> Path:
    """Recall@k charts (text-to-image and image-to-text, k = 1..50) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = report["recall_curves"]
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    ax.plot(curves["k"], curves["text_to_image"], label="text → image")
    ax.plot(curves["k"], curves["image_to_text"], label="image → text")
    ax.set_xscale("log")
    ax.set_xlabel("k")
    ax.set_ylabel("recall@k")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.set_title(f"{report['dataset']} / {report['split']} — {report['encoder']['name']}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
