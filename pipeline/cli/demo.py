"""``viewfinder demo`` command: prints the demo's queries, hits and evaluation summary."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

console = Console()


def demo_cmd(
    cache: Annotated[Path | None, typer.Option(help="Cache folder (default: ~/.cache/viewfinder/demo).")] = None,
    config: Annotated[str, typer.Option("--config", "-c", help="Pipeline preset.")] = "default",
    scenes: Annotated[int, typer.Option(help="Scenes in the demo collection.")] = 2000,
) -> None:
    """Offline tour: generate scenes, index them with the bundled model, search, evaluate."""
    from ..demo.run import run_demo

    result = run_demo(cache, config, scenes)
    for query, found in result.searches:
        table = Table(title=query.label, title_justify="left", show_edge=False)
        for col in ("rank", "score", "id", "caption"):
            table.add_column(col)
        for hit in found.hits[:5]:
            mark = " [green](target)[/]" if hit.key == query.target_key else ""
            mark = mark or (" [green](matches)[/]" if hit.key in query.relevant else "")
            table.add_row(str(hit.rank), f"{hit.score:.3f}", hit.key + mark, (hit.text or "")[:70])
        console.print(table)
    r = result.report
    t2i, i2t = r["text_to_image"], r["image_to_text"]
    console.print(
        f"\n[bold]eval[/] on {r['images']} demo scenes, {r['captions']} held-out-template captions: "
        f"text→image R@1 {t2i['R@1']:.3f} R@5 {t2i['R@5']:.3f} R@10 {t2i['R@10']:.3f}; "
        f"image→text R@1 {i2t['R@1']:.3f} R@5 {i2t['R@5']:.3f}"
    )
    sets = r.get("query_sets", {})
    if partial := sets.get("partial"):
        shares = ", ".join(
            f"{name} {row['share_at_k']:.2f} (chance {row['chance']:.2f})"
            for name, row in partial["attributes"].items()
            if name != "all"
        )
        console.print(f"partial queries, share of top-10 matching: {shares}")
    for kind in ("binding_swap", "relation_swap"):
        if kind in sets:
            console.print(f"{kind.replace('_', ' ')} accuracy {sets[kind]['accuracy']:.3f} (chance 0.5)")
    timing = ", ".join(f"{k} {v:.1f}s" for k, v in result.seconds.items())
    console.print(f"\n[dim]{timing}[/]")
    console.print(f"contact sheet: [bold]{result.contact_sheet}[/]")
    console.print(f"eval report:   {result.report_path}")
    console.print(f'search it:     viewfinder search "a large red star" --index {result.index_dir}')
