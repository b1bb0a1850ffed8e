"""Does the shared training loop (``pipeline/train/loop.py``) train the zoo models bit for bit as the
per-trainer loops it replaced did, on CPU?

For each zoo training config (``configs/train/scene-{clip,captioner,reranker}.yaml``) a short variant
runs through the CLI, ``viewfinder train KIND --config``, exactly as a person would run it: the
shipped config with only ``train.steps`` (2N), the scene set's sizes and folder (a small one, shared
by every run) and ``out`` changed. Each trainer runs twice per checkout: uninterrupted to 2N steps
(``full``), and stopped after N (``--max-steps N``: ``stopped``) then resumed to 2N (``resumed``).
A run's fingerprint: the sha256 of every file in ``<out>/model``, the ``log.jsonl`` records without
their timings (``samples_per_s``, ``val_captions_per_s``), the summary's keys and its ``final_eval``
(timings left out), and whether ``<out>/checkpoint.pt`` loads with ``torch.load(weights_only=True)``.

Both checkouts run on this machine, CPU only (``CUDA_VISIBLE_DEVICES=``), one after the other. A
checkout is a git revision (checked out with ``git worktree add`` under ``--work``) or a folder
holding one; each runs in its own interpreter, with a ``viewfinder`` package assembled from that
checkout first on ``PYTHONPATH`` (the editable install of the repository is shadowed; each run
checks where it imported ``viewfinder.pipeline`` from).

    .venv/bin/python reports/scripts/check_loop_reproduces.py --old 1ce500c --new . \\
        --out reports/loop-reproduces.json

prints the JSON result (``identical``: every fingerprint of ``--new`` equals ``--old``'s, and a
resumed run equals an uninterrupted one in ``--new`` exactly where it did in ``--old``) and writes it
to ``--out``. About 10 minutes on 2 CPU cores with the default ``--steps 10``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
TRAINERS = ("clip", "captioner", "reranker")
CONFIGS = {kind: f"configs/train/scene-{kind}.yaml" for kind in TRAINERS}
TIMING_KEYS = {"samples_per_s", "val_captions_per_s", "train_minutes", "load_minutes", "machine"}
SCENES = {"n_train": 300, "n_val": 40, "n_test": 8, "n_compositional": 8}
"""The small scene set every run trains on (seed and image size stay the configs' own)."""

LAUNCH = """
import sys
from pathlib import Path
import viewfinder.pipeline as pipeline
root = Path(sys.argv[1]).resolve()
where = Path(pipeline.__file__).resolve()
if root not in where.parents:
    raise SystemExit(f"imported viewfinder.pipeline from {where}, not from the checkout {root}")
sys.argv = ["viewfinder", *sys.argv[2:]]
from viewfinder.pipeline.cli import main
main()
"""


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(REPO), *args], check=True, capture_output=True, text=True).stdout.strip()


def checkout(spec: str, work: Path, label: str) -> tuple[Path, str]:
    """The folder holding ``spec`` (an existing folder, or a git revision checked out under ``work``)
    and a description of what it is."""
    folder = Path(spec)
    if folder.is_dir():
        head = subprocess.run(["git", "-C", str(folder), "rev-parse", "HEAD"], capture_output=True, text=True)
        dirty = subprocess.run(["git", "-C", str(folder), "status", "--porcelain"], capture_output=True, text=True)
        state = "with uncommitted changes" if dirty.stdout.strip() else "clean"
        return folder.resolve(), f"folder {folder.resolve()} (HEAD {head.stdout.strip()}, {state})"
    commit = git("rev-parse", spec)
    target = work / f"src-{label}"
    if target.exists():  # a scratch checkout this script made earlier
        git("-C", str(target), "checkout", "--quiet", "--detach", commit)
    else:
        git("worktree", "add", "--detach", str(target), commit)
    return target, f"git revision {spec} ({commit})"


def package_shim(source: Path, shim: Path) -> Path:
    """A folder whose ``viewfinder`` package maps to ``source`` the way ``setup.py`` installs it."""
    if shim.exists():
        shutil.rmtree(shim)
    pkg = shim / "viewfinder"
    pkg.mkdir(parents=True)
    for item in (source / "viewfinder").iterdir():
        (pkg / item.name).symlink_to(item)
    for name in ("pipeline", "adapters", "configs", "prompts"):
        (pkg / name).symlink_to(source / name)
    return shim


def short_config(kind: str, source: Path, work: Path, out: Path, steps: int) -> Path:
    """The zoo config of ``kind`` with 2N steps, the small scene set and its own ``out``."""
    import yaml

    config = yaml.safe_load((source / CONFIGS[kind]).read_text(encoding="utf-8"))
    config["train"]["steps"] = steps
    config["data"].update(SCENES, root=str(work / "scenes"))
    config["out"] = str(out)
    path = out.with_suffix(".yaml")
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def run_cli(source: Path, shim: Path, args: list[str], log: Path) -> float:
    env = {
        **os.environ,
        "PYTHONPATH": str(shim),
        "CUDA_VISIBLE_DEVICES": "",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
    }
    t = time.perf_counter()
    with log.open("a") as fh:
        fh.write(f"$ viewfinder {' '.join(args)}\n")
        fh.flush()
        done = subprocess.run(
            [sys.executable, "-c", LAUNCH, str(source), *args], cwd=shim, env=env, stdout=fh, stderr=fh
        )
    if done.returncode:
        raise SystemExit(f"viewfinder {' '.join(args)} failed ({done.returncode}); see {log}")
    return time.perf_counter() - t


def fingerprint(out: Path) -> dict[str, Any]:
    import torch

    def clean(record: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in record.items() if k not in TIMING_KEYS}

    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    summary = json.loads((out / "summary.json").read_text())
    try:
        state = torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=True)
        weights_only = sorted(state)
    except Exception as exc:  # noqa: BLE001 - the failure is the finding
        weights_only = f"fails: {type(exc).__name__}: {str(exc)[:200]}"
    losses = [r["loss"] for r in log]
    return {
        "model": {p.name: sha256(p) for p in sorted((out / "model").iterdir()) if p.is_file()},
        "losses": losses,
        "losses_sha256": hashlib.sha256(json.dumps(losses).encode()).hexdigest(),
        "log": [clean(r) for r in log],
        "summary_keys": sorted(summary),
        "final_eval": clean(summary["final_eval"]),
        "checkpoint_weights_only": weights_only,
    }


def run_checkout(spec: str, label: str, work: Path, n: int, reuse: bool) -> dict[str, Any]:
    source, what = checkout(spec, work, label)
    saved = work / f"fingerprints-{label}.json"
    if reuse and saved.is_file():
        previous = json.loads(saved.read_text())
        if previous["checkout"] == what and previous["steps"] == n and "uncommitted" not in what:
            print(f"{label}: reusing {saved}", file=sys.stderr)
            return previous
    shim = package_shim(source, work / f"shim-{label}")
    runs_dir = work / f"runs-{label}"
    if runs_dir.exists():
        shutil.rmtree(runs_dir)
    runs_dir.mkdir(parents=True)
    log = runs_dir / "commands.log"
    result: dict[str, Any] = {"checkout": what, "steps": n, "trainers": {}}
    for kind in TRAINERS:
        full_cfg = short_config(kind, source, work, runs_dir / f"{kind}-full", 2 * n)
        split_cfg = short_config(kind, source, work, runs_dir / f"{kind}-split", 2 * n)
        seconds = run_cli(source, shim, ["train", kind, "--config", str(full_cfg)], log)
        fp: dict[str, Any] = {"full": fingerprint(runs_dir / f"{kind}-full")}
        seconds += run_cli(source, shim, ["train", kind, "--config", str(split_cfg), "--max-steps", str(n)], log)
        fp["stopped"] = fingerprint(runs_dir / f"{kind}-split")
        seconds += run_cli(source, shim, ["train", kind, "--config", str(split_cfg)], log)
        fp["resumed"] = fingerprint(runs_dir / f"{kind}-split")
        fp["resumed_equals_full"] = fp["resumed"]["model"] == fp["full"]["model"]
        fp["seconds"] = round(seconds, 1)
        result["trainers"][kind] = fp
        print(f"{label} {kind}: {seconds:.0f} s", file=sys.stderr, flush=True)
    saved.write_text(json.dumps(result, indent=2) + "\n")
    return result


def compare(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kind in TRAINERS:
        a, b = old["trainers"][kind], new["trainers"][kind]
        row = {
            f"{run}_{part}_equal": a[run][part] == b[run][part]
            for run in ("full", "stopped", "resumed")
            for part in ("model", "losses", "log", "summary_keys", "final_eval")
        }
        row["resumed_equals_full"] = {"old": a["resumed_equals_full"], "new": b["resumed_equals_full"]}
        row["checkpoint_weights_only"] = {
            "old": a["resumed"]["checkpoint_weights_only"],
            "new": b["resumed"]["checkpoint_weights_only"],
        }
        row["identical"] = all(v for k, v in row.items() if k.endswith("_equal")) and (
            a["resumed_equals_full"] == b["resumed_equals_full"]
        )
        out[kind] = row
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--old", required=True, help="git revision or folder: the code before the shared loop")
    parser.add_argument("--new", default=".", help="git revision or folder: the code with it (default: this one)")
    parser.add_argument("--steps", type=int, default=10, help="N: runs go to 2N steps, the split one stops at N")
    parser.add_argument("--work", type=Path, default=Path("/tmp/vf-loop-check"), help="scratch folder")
    parser.add_argument("--out", type=Path, help="write the JSON result here too")
    parser.add_argument(
        "--reuse", action="store_true", help="reuse a git revision's fingerprints already in --work (same N)"
    )
    parser.add_argument("--old-only", action="store_true", help="fingerprint --old only (for a later --reuse)")
    args = parser.parse_args()
    import torch

    args.work.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    old = run_checkout(args.old, "old", args.work, args.steps, args.reuse)
    if args.old_only:
        print(json.dumps(old, indent=2))
        return
    new = run_checkout(args.new, "new", args.work, args.steps, args.reuse)
    verdicts = compare(old, new)
    report = {
        "identical": all(v["identical"] for v in verdicts.values()),
        "verdicts": verdicts,
        "command": " ".join(["python", "reports/scripts/check_loop_reproduces.py", *sys.argv[1:]]),
        "steps": {"stopped_at": args.steps, "total": 2 * args.steps},
        "scenes": SCENES,
        "configs": CONFIGS,
        "machine": {
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "device": "cpu (CUDA_VISIBLE_DEVICES='')",
        },
        "minutes": round((time.perf_counter() - t) / 60, 1),
        "old": old,
        "new": new,
    }
    text = json.dumps(report, indent=2) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text, encoding="utf-8")
    sys.exit(0 if report["identical"] else 1)


if __name__ == "__main__":
    main()
