"""How much shape information do the frozen scene CLIP's vision tokens carry?

A thin wrapper, kept so the command that wrote ``reports/probe-vision-shapes.json`` still runs: the
probe is now library code (``viewfinder.pipeline.eval.probe``) and a command, ``viewfinder
eval-probe``, that takes any encoder entry and any layers. This runs that command on the bundled
``scene-clip`` with its defaults (every layer and what the Q-Former reads, 4,000 training and 1,000
held-out scenes, 1,000 steps, the pixel CNN as the reference); options after the two paths are
passed on (see ``viewfinder eval-probe --help``). Its report has the command's layout, not the
first script's (which probed the patch embedding and the last block only).

Usage: python reports/scripts/probe_vision_shapes.py SCENES_DIR REPORT.json [OPTIONS], e.g.
  python reports/scripts/probe_vision_shapes.py ~/.cache/viewfinder/scenes-64 reports/probe/scene-clip.json
"""

from __future__ import annotations

import sys

from viewfinder.pipeline.cli import app


def main(argv: list[str]) -> None:
    if len(argv) < 2:
        raise SystemExit(__doc__)
    scenes, out, *options = argv
    app(["eval-probe", scenes, "-m", "scene-clip", "--out", out, *options], prog_name="viewfinder")


if __name__ == "__main__":
    main(sys.argv[1:])
