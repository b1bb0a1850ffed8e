"""Size and CPU speed of candidate CLIP architectures before any training (random weights).

    python reports/scripts/arch_size_speed.py OUT.json ARCH [ARCH ...]

For each architecture (a ``configs/arch`` name or JSON path): parameters (vision and total), the fp16
weight size, and ``encode_image`` images/s at batch 256 on 64 px inputs, best of 3 rounds taken in turn
(A, B, ..., A, B, ...) so the machine's load falls on all alike; each rate also over the first arch's.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

from viewfinder.adapters.open_clip_encoder import create_open_clip
from viewfinder.pipeline.reports import machine_info, save_report


def main(out: Path, archs: list[str]) -> None:
    models = {}
    report: dict = {"command": "python reports/scripts/arch_size_speed.py " + " ".join([str(out), *archs]),
                    "batch": 256, "image_size": 64, "rounds": 3, "archs": {}}  # fmt: skip
    for arch in archs:
        torch.manual_seed(0)
        model = create_open_clip(arch).model.eval()
        models[arch] = model
        total = sum(p.numel() for p in model.parameters())
        report["archs"][arch] = {
            "vision_params_m": sum(p.numel() for p in model.visual.parameters()) / 1e6,
            "total_params_m": total / 1e6,
            "fp16_mb": total * 2 / 1e6,
            "images_per_s": 0.0,
        }
    x = torch.randn(256, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        for model in models.values():
            model.encode_image(x)  # warm-up
        for _ in range(3):
            for arch, model in models.items():
                start = time.perf_counter()
                model.encode_image(x)
                rate = 256 / (time.perf_counter() - start)
                report["archs"][arch]["images_per_s"] = max(report["archs"][arch]["images_per_s"], rate)
    first = report["archs"][archs[0]]["images_per_s"]
    for entry in report["archs"].values():
        entry["speed_vs_first"] = entry["images_per_s"] / first
    report["torch_threads"] = torch.get_num_threads()
    report["machine"] = machine_info()
    save_report(report, out)
    for arch, entry in report["archs"].items():
        rate, ratio = entry["images_per_s"], entry["speed_vs_first"]
        print(f"{arch}: {entry['fp16_mb']:.1f} MB fp16, {rate:.0f} img/s ({ratio:.2f}x)")


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2:])
