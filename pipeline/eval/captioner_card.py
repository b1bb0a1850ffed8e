"""The model card of a trained captioner (Q-Former + small LM on a frozen CLIP), from its run and eval reports."""

from __future__ import annotations

from typing import Any


def render_captioner_card(
    name: str, train_config: dict[str, Any], summary: dict[str, Any], reports: list[dict[str, Any]], size_mb: float
) -> str:
    """Markdown: how the captioner was made, and its caption F1 per split (greedy), beside the parse of the
    split's own captions (the parser's ceiling)."""
    a, t, d, m = train_config["arch"], train_config["train"], train_config["data"], summary["machine"]
    where = m.get("cuda") or f"{m['cpu_count']} CPU cores ({m['processor']})"
    lines = [
        f"# {name}",
        "",
        f"A BLIP-2 style captioner on top of the frozen `{train_config['encoder']}` CLIP, trained by viewfinder's "
        "own code on its synthetic scene benchmark: the CLIP's vision tokens feed a Q-Former, whose query outputs, "
        "projected, prefix a small GPT-2 trained from scratch over a word-level vocabulary of the training captions.",
        "",
        "## How it was made",
        "",
        f"- Architecture: Q-Former {a['qformer_layers']} layers x width {a['qformer_hidden']}, "
        f"{a['num_query_tokens']} query tokens; GPT-2 {a['lm_layers']} layers x width {a['lm_hidden']}; "
        f"{summary.get('parameters', 0) / 1e6:.1f}M trained parameters; "
        f"vocabulary of {summary.get('vocab_size', '?')} words.",
        f"- Data: scene benchmark seed {d['seed']}, {summary.get('train_images', '?')} training images, "
        f"{summary.get('train_captions', '?')} training-template captions. No test or compositional scene is used.",
        f"- Training: {summary['steps']} steps, batch {t['batch_size']}, lr {t['lr']} (cosine, {t['warmup_steps']} "
        f"warm-up), seed {t['seed']}; {summary['train_minutes']:.1f} minutes on {where}.",
        f"- Weights: fp16 safetensors, {size_mb:.1f} MB (the CLIP is the `{train_config['encoder']}` entry).",
        f"- Reproduce: `viewfinder train captioner --config configs/train/{name}.yaml`, then `viewfinder train export` "
        "and the eval commands below.",
        "",
        "## Results (greedy captions; object = shape, colour, size and position all right)",
        "",
        "| split | images | object F1 | precision | recall | shape | colour | size | position "
        "| own captions' F1 | images/s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in reports:
        c = r.get("captioning")
        if not c:
            continue
        g = c["generated"]
        attrs = " | ".join(
            f"{g.get(f'{n}_accuracy', float('nan')):.3f}" for n in ("shape", "colour", "size", "position")
        )
        lines.append(
            f"| {r['split']} | {g['n_captions']} | **{g['f1']:.3f}** | {g['precision']:.3f} | {g['recall']:.3f} | "
            f"{attrs} | {c['ground_truth_parse']['f1']:.3f} | {c['images_per_second']:.0f} |"
        )
    lines += ["", "## Commands behind these figures", ""]
    for r in reports:
        lines.append(f"- `{r.get('command', '')}` ({r['machine']['cpu_count']} CPU cores, {r['machine']['platform']})")
    return "\n".join(lines) + "\n"
