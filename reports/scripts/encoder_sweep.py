"""Choose the scene encoder by measurement, then train the reranker and captioner on it: one run.

    python reports/scripts/encoder_sweep.py --work DIR --out OUT \\
        --arch scene-clip-rn16 --arch scene-clip-rn16-deep --arch scene-clip-rn20 --arch scene-clip-vit

1. The scene benchmark of ``configs/train/scene-clip.yaml`` (generated when missing).
2. One CLIP per ``--arch``, from that config with only ``arch`` (and ``--clip-steps``) changed, each
   in its own process (they share the accelerator), each followed by the shape probe on the tokens
   its Q-Former would read (``viewfinder eval-probe``'s code, layer ``qformer``, no pixel CNN).
3. The winner: the highest val T->I R@1 among the candidates whose probe F1 reaches
   ``--probe-goal`` (the highest probe F1 when none does).
4. ``configs/train/scene-reranker.yaml`` and ``scene-captioner.yaml`` on the winner (only
   ``encoder`` and ``out`` changed), in parallel, beside the full probe report (the zoo's CLIP and
   the winner, every layer, the pixel CNN).
5. Every finished run exported as the zoo ships it (fp16) under ``DIR/zoo``; ``OUT/sweep.json``
   holds every figure and the configs, and ``OUT/zoo.tar.partNN`` the exported folders, logs and
   configs (``cat OUT/zoo.tar.part* | tar x``).

``--deadline`` (seconds from the start) time-boxes the trainings (``max_seconds``: a run stopped
early is exported as it is and its summary says how many steps it had) so the packing always runs.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

import yaml

START = time.monotonic()
ROOT = Path(__file__).resolve().parents[2]
PART_BYTES = 15 * 1024 * 1024


def elapsed() -> float:
    return time.monotonic() - START


def log(msg: str) -> None:
    print(f"[{elapsed():6.1f}s] {msg}", flush=True)


def write_config(base: str, path: Path, **changes: Any) -> Path:
    """``configs/train/<base>.yaml`` with top-level ``changes`` (dicts merged one level down)."""
    data = yaml.safe_load((ROOT / "configs" / "train" / f"{base}.yaml").read_text(encoding="utf-8"))
    for key, value in changes.items():
        data[key] = {**data.get(key, {}), **value} if isinstance(value, dict) else value
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


# ------------------------------------------------------------------------------ child processes
def child(kind: str, config: str, result: str, max_seconds: float) -> None:
    """One training run (and, for a CLIP, its probe); writes a JSON result file."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    from viewfinder.adapters.open_clip_encoder import pick_device
    from viewfinder.pipeline.eval.probe import ProbeSettings, probe_report
    from viewfinder.pipeline.reports import save_report
    from viewfinder.pipeline.train.captioner import load_captioner_config, train_captioner
    from viewfinder.pipeline.train.clip import load_train_config, train_clip
    from viewfinder.pipeline.train.reranker import load_reranker_config, train_reranker

    device = str(pick_device("auto"))  # where the probes train
    out: dict[str, Any] = {"kind": kind, "config": config}
    t0 = time.perf_counter()
    if kind == "clip":
        cfg = load_train_config(config)
        res = train_clip(cfg, progress=False, max_seconds=max_seconds)
        out.update(steps=res.steps, final_eval=res.final_eval, model_dir=str(res.model_dir), run=str(res.out))
        out["train_seconds"] = time.perf_counter() - t0
        report = probe_report(
            Path(cfg.data.root).expanduser(),
            [str(res.model_dir)],
            ProbeSettings(pixel_cnn=False, device=device),
            layers=["qformer"],
            progress=False,
        )
        block = next(iter(report["encoders"].values()))
        out["probe_qformer_micro_f1"] = block.get("qformer_micro_f1")
        out["probe"] = block
    elif kind == "reranker":
        res = train_reranker(load_reranker_config(config), progress=False, max_seconds=max_seconds)
        out.update(steps=res.steps, final_eval=res.final_eval, run=str(res.out))
    elif kind == "captioner":
        res = train_captioner(load_captioner_config(config), progress=False, max_seconds=max_seconds)
        out.update(steps=res.steps, final_eval=res.final_eval, run=str(res.out))
    elif kind == "probe":
        spec = json.loads(config)
        report = probe_report(
            Path(spec["root"]).expanduser(), spec["entries"], ProbeSettings(device=device), progress=False
        )
        save_report(report, Path(spec["report"]))
        out["report"] = spec["report"]
    out["seconds"] = time.perf_counter() - t0
    Path(result).write_text(json.dumps(out, indent=2, default=str), encoding="utf-8")


def launch(kind: str, config: str, work: Path, name: str, max_seconds: float, threads: int) -> tuple[Any, Path]:
    result = work / "results" / f"{name}.json"
    result.parent.mkdir(parents=True, exist_ok=True)
    logf = open(work / "logs" / f"{name}.log", "w")  # noqa: SIM115 - closed with the process
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, __file__, "--child", kind, config, str(result), str(max_seconds)]
    log(f"start {name}: {kind} {config if len(config) < 120 else ''}")
    return subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, env=env, cwd=ROOT), result


def wait_all(procs: dict[str, tuple[Any, Path]], deadline: float) -> dict[str, dict[str, Any]]:
    results: dict[str, dict[str, Any]] = {}
    for name, (proc, result) in procs.items():
        try:
            proc.wait(timeout=max(1.0, deadline - elapsed()))
        except subprocess.TimeoutExpired:
            proc.kill()
            log(f"{name}: killed at the deadline")
        if result.is_file():
            results[name] = json.loads(result.read_text(encoding="utf-8"))
            log(f"{name}: done, {json.dumps({k: v for k, v in results[name].items() if k != 'probe'})[:400]}")
        else:
            results[name] = {"failed": True, "returncode": proc.returncode}
            log(f"{name}: FAILED (rc {proc.returncode}), see logs/{name}.log")
    return results


# ------------------------------------------------------------------------------------- packing
def pack(work: Path, out: Path, sweep: dict[str, Any]) -> None:
    from viewfinder.pipeline.train.export import export_run

    zoo = work / "zoo"
    losers = {n for n in sweep.get("candidates", {}) if n != sweep.get("winner")}
    for run in sorted((work / "runs").glob("*")):
        if (run / "summary.json").is_file() and run.name not in losers:  # the others: figures only
            try:
                export_run(run, zoo / run.name)
            except Exception as err:  # noqa: BLE001 - keep packing the others
                log(f"export {run.name}: {err}")
    text = json.dumps(sweep, indent=2, default=str)
    for folder in (work, out):
        (folder / "sweep.json").write_text(text, encoding="utf-8")
    tar_path = work / "zoo.tar"
    with tarfile.open(tar_path, "w") as tar:
        for sub in ("zoo", "configs", "logs", "results", "reports", "sweep.json"):
            if (work / sub).exists():
                tar.add(work / sub, arcname=sub)
    data = tar_path.read_bytes()
    for i in range(0, len(data), PART_BYTES):
        (out / f"zoo.tar.part{i // PART_BYTES:02d}").write_bytes(data[i : i + PART_BYTES])
    log(f"packed {len(data) / 1e6:.1f} MB into {out}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--arch", action="append", default=[])
    ap.add_argument("--clip-steps", type=int, default=None)
    ap.add_argument("--reranker-steps", type=int, default=None)
    ap.add_argument("--captioner-steps", type=int, default=None)
    ap.add_argument("--data-root", default=None, help="another benchmark folder (a small one for a dry run)")
    ap.add_argument("--n-train", type=int, default=None)
    ap.add_argument("--probe-goal", type=float, default=0.95)
    ap.add_argument("--deadline", type=float, default=560.0, help="seconds from the start the whole run may take")
    ap.add_argument("--threads", type=int, default=3)
    ap.add_argument("--full-probe", action="store_true", help="also run the full probe report (old and new) here")
    ap.add_argument("--child", nargs=4, metavar=("KIND", "CONFIG", "RESULT", "MAX_SECONDS"))
    args = ap.parse_args()
    if args.child:
        kind, config, result, max_seconds = args.child
        child(kind, config, result, float(max_seconds))
        return
    if not (args.work and args.out and args.arch):
        ap.error("--work, --out and at least one --arch are required")

    work, out = args.work.resolve(), args.out.resolve()
    for sub in ("logs", "configs", "runs", "reports"):
        (work / sub).mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    import torch

    data = yaml.safe_load((ROOT / "configs/train/scene-clip.yaml").read_text(encoding="utf-8"))["data"]
    if args.data_root:
        data["root"] = args.data_root
    if args.n_train:
        data["n_train"] = args.n_train
    from viewfinder.pipeline.train.clip import SceneDataConfig, ensure_scene_data

    root = ensure_scene_data(SceneDataConfig(**data))
    log(f"scenes ready at {root}; cuda: {torch.cuda.is_available()}")
    sweep: dict[str, Any] = {"args": {k: str(v) for k, v in vars(args).items()}, "data": data, "candidates": {}}
    budget = args.deadline - 45  # the packing's share

    def steps(value: int | None) -> dict[str, Any]:
        return {"steps": value} if value else {}

    try:
        # 2. the candidates
        procs = {}
        clip_box = max(30.0, (budget - elapsed()) * 0.30)
        for arch in args.arch:
            name = f"clip-{arch}"
            cfg = write_config(
                "scene-clip", work / "configs" / f"{name}.yaml", name=name, arch=arch, data=data,
                train=steps(args.clip_steps), out=str(work / "runs" / name),
            )  # fmt: skip
            procs[name] = launch("clip", str(cfg), work, name, clip_box, args.threads)
        cands = wait_all(procs, budget * 0.55)
        sweep["candidates"] = cands
        ok = {n: r for n, r in cands.items() if not r.get("failed")}
        if not ok:
            raise RuntimeError("no candidate finished")

        # 3. the winner
        def r1(r: dict[str, Any]) -> float:
            return float(r["final_eval"].get("val_t2i_R@1", 0.0))

        good = {n: r for n, r in ok.items() if (r.get("probe_qformer_micro_f1") or 0) >= args.probe_goal}
        winner = (
            max(good, key=lambda n: r1(good[n])) if good else max(ok, key=lambda n: ok[n]["probe_qformer_micro_f1"])
        )
        sweep["winner"] = winner
        sweep["rule"] = f"highest val T->I R@1 among probe F1 >= {args.probe_goal} (else highest probe F1)"
        log(f"winner: {winner}")
        model_dir = ok[winner]["model_dir"]

        # 4. reranker, captioner, full probe
        box = max(30.0, budget - elapsed() - 60)  # loading and export around the time box
        procs = {}
        for kind, base, n in (("reranker", "scene-reranker", args.reranker_steps),
                              ("captioner", "scene-captioner", args.captioner_steps)):  # fmt: skip
            cfg = write_config(
                base, work / "configs" / f"{base}.yaml", encoder=model_dir, data=data, train=steps(n),
                out=str(work / "runs" / base),
            )  # fmt: skip
            procs[kind] = launch(kind, str(cfg), work, kind, box, 6)
        spec = {"root": str(root), "entries": ["scene-clip", model_dir],
                "report": str(work / "reports" / "probe-scene-clip-old-new.json")}  # fmt: skip
        if args.full_probe:
            procs["probe"] = launch("probe", json.dumps(spec), work, "probe", box, 2)
        sweep["zoo"] = wait_all(procs, budget)
    except Exception as err:  # noqa: BLE001 - pack what there is
        log(f"stopped: {err!r}")
        sweep["error"] = repr(err)
    sweep["seconds"] = elapsed()
    pack(work, out, sweep)


if __name__ == "__main__":
    main()
