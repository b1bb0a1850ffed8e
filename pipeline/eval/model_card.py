"""Model cards for the zoo: how a model was made and what it measured, from the run's own files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def _fmt(v: float) -> str:
    return f"{v:.3f}"


def _twin_lines(train: dict[str, Any], summary: dict[str, Any]) -> list[str]:
    fraction = train.get("twin_fraction", 0.0)
    if not fraction:
        return []
    names = {
        "reshape": "shape",
        "recolour": "colour",
        "resize": "size",
        "move": "grid cell",
        "swap_colours": "two colours swapped",
        "swap_sizes": "two sizes swapped",
        "swap_places": "two objects' places swapped",
    }
    kinds = train.get("twin_kinds") or list(names)
    changes = ", ".join(names.get(k, k) for k in kinds)
    return [
        f"- Hard negatives: {summary.get('train_twins', 'some')} *twins* (a training scene changed in one fact: "
        f"{changes}), rendered in memory; "
        f"{fraction:.0%} of every batch is (scene, twin) pairs. A partial description counts every image it "
        "fits as a positive (multi-positive contrastive loss).",
    ]


def _filler_lines(train: dict[str, Any]) -> list[str]:
    prob, most = train.get("filler_prob", 0.0), train.get("max_fillers", 0)
    if not prob or not most:
        return []
    return [
        f"- Wording noise: {prob:.0%} of training texts get 1-{most} random common words inserted, drawn from "
        "words the benchmark never uses, so the test-only caption wording stays unseen.",
    ]


def _arch_lines(arch: dict[str, Any] | None) -> list[str]:
    if not arch:
        return []
    v, t = arch["vision_cfg"], arch["text_cfg"]
    text = (
        f"text transformer {t['layers']} layers x width {t['width']}, MLP ratio {t.get('mlp_ratio', 4)}; "
        f"{arch['embed_dim']}-d joint space."
    )
    if isinstance(v.get("layers"), list | tuple):  # open_clip's ModifiedResNet
        return [
            f"- Architecture: ModifiedResNet (open_clip), {v['layers']} bottleneck blocks per stage, stem width "
            f"{v['width']}, on {v['image_size']}px, attention pooling; {text}",
        ]
    if v.get("timm_model_name"):
        return [f"- Architecture: timm `{v['timm_model_name']}` on {v['image_size']}px; {text}"]
    pos = "fixed 2-D sin-cos" if v.get("pos_embed_type") == "sin_cos_2d" else "learned"
    return [
        f"- Architecture: ViT {v['layers']} layers x width {v['width']}, patch {v.get('patch_size')} on "
        f"{v['image_size']}px, MLP ratio {v.get('mlp_ratio', 4)}, {pos} position embeddings; {text}",
    ]


def _device(m: dict[str, Any]) -> str:
    """Where a run trained, from its summary's machine block."""
    if m.get("cuda"):
        return f"{m['cuda']} ({m['cpu_count']} CPU cores, torch {m['torch']})"
    return f"{m['cpu_count']} CPU cores ({m['processor']}, {m['platform']}, torch {m['torch']})"


def _load_note(summary: dict[str, Any]) -> str:
    load = summary.get("load_minutes")
    return "" if load is None else f" (plus {load:.1f} minutes loading data and rendering twins)"


def render_model_card(
    name: str,
    train_config: dict[str, Any],
    summary: dict[str, Any],
    reports: list[dict[str, Any]],
    size_mb: float,
    arch: dict[str, Any] | None = None,
) -> str:
    """The card's Markdown; ``arch`` is the open_clip model config (vision_cfg, text_cfg, embed_dim)."""
    t = train_config["train"]
    d = train_config["data"]
    m = summary["machine"]
    lines = [
        f"# {name}",
        "",
        f"A small CLIP (open_clip architecture `{train_config['arch']}`, configs/arch/{train_config['arch']}.json) "
        "trained from scratch by viewfinder's own training code on its synthetic scene benchmark. It is the "
        "offline default encoder: it knows coloured shapes on plain backgrounds, not photographs.",
        "",
        "## How it was made",
        "",
        f"- Data: scene benchmark, seed {d['seed']}, {d['image_size']}x{d['image_size']} images, "
        f"{summary['train_images']} training scenes with 5 training-template captions each "
        f"(plus partial descriptions with probability {t['partial_caption_prob']}).",
        *_arch_lines(arch),
        *_twin_lines(t, summary),
        *_filler_lines(t),
        f"- Training: {summary['steps']} steps, batch {t['batch_size']}, AdamW lr {t['lr']} (cosine, "
        f"{t['warmup_steps']} warm-up steps), weight decay {t['weight_decay']}, seed {t['seed']}; "
        f"{summary['train_minutes']:.1f} wall minutes of training{_load_note(summary)} "
        f"on {_device(m)}.",
        f"- Weights: fp16 safetensors, {size_mb:.1f} MB.",
        "- Reproduce: `viewfinder train clip --config configs/train/scene-clip.yaml`, then "
        "`viewfinder train export` and the eval commands below.",
        "",
        "## Results",
        "",
        "Full descriptions use caption templates reserved for testing (never seen in training). "
        "The compositional split holds (shape, colour) pairs that never occur in training.",
        "",
        "| split | images | captions | T→I R@1 | T→I R@5 | T→I R@10 | I→T R@1 | I→T R@5 | I→T R@10 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in reports:
        t2i, i2t = r["text_to_image"], r["image_to_text"]
        lines.append(
            f"| {r['split']} | {r['images']} | {r['captions']} | "
            + " | ".join(_fmt(x[k]) for x in (t2i, i2t) for k in ("R@1", "R@5", "R@10"))
            + " |"
        )
    lines += ["", "### Partial queries (one object or one attribute; many scenes match)", ""]
    lines += ["| split | median target rank | attribute | share of top-10 matching | chance |", "|---|---|---|---|---|"]
    for r in reports:
        p = r.get("query_sets", {}).get("partial")
        if not p:
            continue
        for attr, row in p["attributes"].items():
            lines.append(
                f"| {r['split']} | {p['median_rank']:g} | {attr} | {_fmt(row['share_at_k'])} | {_fmt(row['chance'])} |"
            )
    lines += ["", "### Swaps (pairwise accuracy, chance 0.5) and composed queries", ""]
    lines += [
        "| split | binding swap | relation swap | composed R@10: image+text | text only | target description |",
        "|---|---|---|---|---|---|",
    ]
    for r in reports:
        sets = r.get("query_sets", {})
        b = sets.get("binding_swap", {}).get("accuracy", float("nan"))
        rel = sets.get("relation_swap", {}).get("accuracy", float("nan"))
        c = sets.get("composed", {}).get("baselines", {})
        composed = [
            _fmt(c.get(name, {}).get("R@10", float("nan")))
            for name in ("image_plus_text", "text_only", "target_description_upper_bound")
        ]
        lines.append(f"| {r['split']} | {_fmt(b)} | {_fmt(rel)} | " + " | ".join(composed) + " |")
    lines += [
        "",
        "A dual encoder scores an image and a text independently, so swapped bindings and relations stay "
        "close to chance; the cross-attention reranker is the stage meant to fix them.",
        "",
        "## Commands behind these figures",
        "",
    ]
    for r in reports:
        lines.append(f"- `{r.get('command', '')}` ({r['machine']['cpu_count']} CPU cores, {r['machine']['platform']})")
    return "\n".join(lines) + "\n"


def write_model_card(model_dir: Path, run_dir: Path, report_paths: list[Path], name: str) -> Path:
    train_config = json.loads((run_dir / "train_config.json").read_text())
    summary = json.loads((run_dir / "summary.json").read_text())
    reports = [json.loads(p.read_text()) for p in report_paths]
    size_mb = sum(f.stat().st_size for f in model_dir.glob("*.safetensors")) / 1e6
    card = model_dir / "MODEL_CARD.md"
    if (model_dir / "captioner_config.json").is_file():  # a captioner
        from .captioner_card import render_captioner_card

        card.write_text(render_captioner_card(name, train_config, summary, reports, size_mb), encoding="utf-8")
        return card
    if (model_dir / "qformer_config.json").is_file():  # a reranker
        from .reranker_card import render_reranker_card

        card.write_text(render_reranker_card(name, train_config, summary, reports, size_mb), encoding="utf-8")
        return card
    config_file = model_dir / "open_clip_config.json"
    arch = json.loads(config_file.read_text()).get("model_cfg") if config_file.is_file() else None
    card.write_text(render_model_card(name, train_config, summary, reports, size_mb, arch), encoding="utf-8")
    return card
