"""The model card of a trained reranker (a Q-Former on a frozen CLIP), from its run and eval reports."""

from __future__ import annotations

from typing import Any


def _f(v: float) -> str:
    return f"{v:.3f}"


def render_reranker_card(
    name: str, train_config: dict[str, Any], summary: dict[str, Any], reports: list[dict[str, Any]], size_mb: float
) -> str:
    """Markdown: how the reranker was made, and its figures beside the dual encoder's (same reports)."""
    a, t, d, m = train_config["arch"], train_config["train"], train_config["data"], summary["machine"]
    where = m.get("cuda") or f"{m['cpu_count']} CPU cores ({m['processor']})"
    lines = [
        f"# {name}",
        "",
        f"A BLIP-2 style Q-Former reranker on top of the frozen `{train_config['encoder']}` CLIP, trained by "
        "viewfinder's own code on its synthetic scene benchmark. It rescores a dual encoder's candidates with "
        "image-text matching (ITM) and contrast (ITC); the final score is ITM + ITC, as in LAVIS"
        + _fusion(reports)
        + ".",
        "",
        "## How it was made",
        "",
        f"- Architecture: Q-Former (transformers `Blip2QFormerModel`) {a['num_layers']} layers x width "
        f"{a['hidden_size']}, {a['num_heads']} heads, {a['num_query_tokens']} query tokens, cross-attention every "
        f"{a['cross_attention_frequency']} layer(s) to the CLIP's vision tokens; text input: the CLIP text tower's "
        f"token states, projected; ITC projections to {a['embed_dim']}-d; ITM head on the query outputs.",
        f"- Data: scene benchmark seed {d['seed']}, {summary['train_rows']} training rows "
        f"({d['n_train']} training scenes and their twins), training-template captions, partial descriptions "
        f"(probability {t['partial_caption_prob']}), binding- and relation-swap text pairs of the training scenes, "
        f"filler-word noise (probability {t['filler_prob']}). No test or compositional scene is used.",
        f"- Losses: ITC (multi-positive) + ITM on positives, an in-batch hard negative image per text and text per "
        f"image (sampled by ITC similarity), and the swap pairs; ITM weight ramps up over "
        f"{t['itm_warmup_steps']} steps.",
        f"- Training: {summary['steps']} steps, batch {t['batch_size']}, AdamW lr {t['lr']} (cosine, "
        f"{t['warmup_steps']} warm-up), seed {t['seed']}; {summary['train_minutes']:.1f} minutes on {where} "
        f"(plus {summary.get('load_minutes', 0):.1f} minutes loading data and rendering twins).",
        f"- Weights: fp16 safetensors, {size_mb:.1f} MB (the CLIP is not included: it is the "
        f"`{train_config['encoder']}` entry).",
        f"- Reproduce: `viewfinder train reranker --config configs/train/{name}.yaml`, then `viewfinder train export` "
        "and the eval commands below.",
        "",
        "## Results (scene benchmark; test-only caption templates)",
        "",
        "Each query's dual-encoder top k is rescored by ITC and the best of those (ITM column) by ITM, as the "
        "rerank stage does; figures are from the same report as the dual encoder's.",
        "",
        "| split | k | ITM | T→I R@1 dual / reranked | T→I R@5 dual / reranked | binding swap dual / reranked "
        "| relation swap dual / reranked | partial: shape share dual / reranked |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in reports:
        rr, sets = r.get("rerank"), r.get("query_sets", {})
        if not rr:
            continue
        t2i = rr["t2i"]

        def pair(before: float, after: float) -> str:
            return f"{_f(before)} / **{_f(after)}**"

        shape_before = sets.get("partial", {}).get("attributes", {}).get("shape", {}).get("share_at_k", float("nan"))
        shape_after = rr.get("partial", {}).get("attributes", {}).get("shape", {}).get("share_at_k", float("nan"))
        lines.append(
            f"| {r['split']} | {rr['k']} | {rr.get('itm_k') or rr['k']} | "
            f"{pair(t2i['dual_encoder_same_queries']['R@1'], t2i['reranked']['R@1'])} | "
            f"{pair(t2i['dual_encoder_same_queries']['R@5'], t2i['reranked']['R@5'])} | "
            f"{pair(sets.get('binding_swap', {}).get('accuracy', float('nan')), rr.get('binding_swap', {}).get('accuracy', float('nan')))} | "  # noqa: E501
            f"{pair(sets.get('relation_swap', {}).get('accuracy', float('nan')), rr.get('relation_swap', {}).get('accuracy', float('nan')))} | "  # noqa: E501
            f"{pair(shape_before, shape_after)} |"
        )
    lines += ["", "## Commands behind these figures", ""]
    for r in reports:
        lines.append(f"- `{r.get('command', '')}` ({r['machine']['cpu_count']} CPU cores, {r['machine']['platform']})")
    return "\n".join(lines) + "\n"


def _fusion(reports: list[dict[str, Any]]) -> str:
    """How the reports fused the dual encoder's score in (", plus 3 x ..."), or nothing."""
    weights = {float((r.get("rerank") or {}).get("weights", {}).get("preselect", 0.0)) for r in reports}
    if len(weights) == 1 and (w := weights.pop()) > 0:
        return f", plus {w:g} x the dual encoder's score in the figures below (the `default` preset's rule)"
    return ""
