"""``viewfinder eval``: Recall@K on a Karpathy JSON, a JSONL manifest or a scene benchmark folder."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from .common import ConfigOpt, console, fail


def _print_report(report: dict[str, Any]) -> None:
    table = Table(
        title=f"{report['dataset']} / {report['split']}: {report['images']} images, {report['captions']} captions"
    )
    table.add_column("direction")
    for k in report["text_to_image"]:
        table.add_column(k, justify="right")
    table.add_column("median rank", justify="right")
    table.add_row(
        "text → image", *[f"{v:.3f}" for v in report["text_to_image"].values()], f"{report['t2i_median_rank']:g}"
    )
    table.add_row(
        "image → text", *[f"{v:.3f}" for v in report["image_to_text"].values()], f"{report['i2t_median_rank']:g}"
    )
    console.print(table)
    sets = report.get("query_sets", {})
    if partial := sets.get("partial"):
        t = Table(title=f"partial queries ({partial['n_queries']}): median target rank {partial['median_rank']:g}")
        t.add_column("named attribute")
        t.add_column(f"share of top-{partial['k']} matching", justify="right")
        t.add_column("chance", justify="right")
        t.add_column("queries", justify="right")
        for name, row in partial["attributes"].items():
            t.add_row(name, f"{row['share_at_k']:.3f}", f"{row['chance']:.3f}", str(row["n_queries"]))
        console.print(t)
    for kind in ("binding_swap", "relation_swap"):
        if entry := sets.get(kind):
            extra = ", ".join(f"{k}: {v:.3f}" for k, v in entry.items() if k.startswith("accuracy_"))
            console.print(
                f"{kind.replace('_', ' ')}: accuracy {entry['accuracy']:.3f} (chance 0.5, {entry['n_queries']} pairs)"
                + (f" [{extra}]" if extra else "")
            )
    if composed := sets.get("composed"):
        t = Table(title=f"composed queries ({composed['n_queries']}), dual-encoder baselines")
        t.add_column("query")
        for k in ("R@1", "R@5", "R@10", "R@50", "median_rank"):
            t.add_column(k, justify="right")
        for name, row in composed["baselines"].items():
            t.add_row(name, *[f"{row[k]:.3f}" if k != "median_rank" else f"{row[k]:g}" for k in row])
        console.print(t)
    if rerank := report.get("rerank"):
        _print_rerank(rerank, sets)
    if agent := report.get("agent"):
        from .agent_eval import print_composed, print_dialogue

        if composed := agent.get("composed"):
            print_composed(composed | {"baselines": sets.get("composed", {}).get("baselines", {})})
        print_dialogue(agent["dialogue"])
    if captions := report.get("captioning"):
        gen, truth = captions["generated"], captions["ground_truth_parse"]
        console.print(
            f"captions by {captions['captioner']} ({gen['n_captions']} images, greedy): object F1 {gen['f1']:.3f} "
            f"(precision {gen['precision']:.3f}, recall {gen['recall']:.3f}); the split's own captions parse to "
            f"F1 {truth['f1']:.3f}; {captions['images_per_second']:.1f} images/s",
            soft_wrap=True,
        )


def _print_rerank(rerank: dict[str, Any], sets: dict[str, Any]) -> None:
    """The reranker's figures beside the dual encoder's, one table."""
    w = rerank.get("weights", {})
    rule = " + ".join(f"{v:g} {n.upper()}" for n, v in w.items() if v) or "ITM + ITC"
    itm = "all" if rerank.get("itm_k") is None else rerank["itm_k"]
    t = Table(title=f"rerank of the top {rerank['k']} by {rerank['matcher']} (ITM on {itm}; final = {rule})")
    for column in ("figure", "dual encoder", "reranked"):
        t.add_column(column, justify="right" if column != "figure" else "left")
    t2i = rerank["t2i"]
    for k in ("R@1", "R@5", "R@10"):
        t.add_row(f"text → image {k}", f"{t2i['dual_encoder_same_queries'][k]:.3f}", f"{t2i['reranked'][k]:.3f}")
    for kind in ("binding_swap", "relation_swap"):
        if kind in rerank and kind in sets:
            t.add_row(
                f"{kind.replace('_', ' ')} accuracy", f"{sets[kind]['accuracy']:.3f}", f"{rerank[kind]['accuracy']:.3f}"
            )
    if "partial" in rerank and "partial" in sets:
        for name, row in rerank["partial"]["attributes"].items():
            before = sets["partial"]["attributes"].get(name, {}).get("share_at_k", float("nan"))
            t.add_row(f"partial: top-10 share, {name}", f"{before:.3f}", f"{row['share_at_k']:.3f}")
    console.print(t)


def eval_cmd(
    dataset: Annotated[
        Path, typer.Argument(help="Karpathy JSON, JSONL manifest with captions, or scene benchmark folder.")
    ],
    split: Annotated[str, typer.Option(help="Split to evaluate (Karpathy / scene benchmark).")] = "test",
    config: ConfigOpt = None,
    images: Annotated[Path | None, typer.Option(help="Image root for a Karpathy JSON (default: its folder).")] = None,
    out: Annotated[Path | None, typer.Option(help="Report JSON path (default: eval-<dataset>-<split>.json).")] = None,
    plot: Annotated[bool, typer.Option(help="Also write recall@k charts as PNG beside the report.")] = False,
    work_dir: Annotated[Path | None, typer.Option(help="Where the evaluation's indexes are cached.")] = None,
    rerank_k: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="With a preset that reranks (scene benchmark): rescore each query's top k (default: the preset's).",
        ),
    ] = None,
    itm_k: Annotated[
        int | None,
        typer.Option("--itm-k", min=1, help="... and ITM the best this many of those (default: the preset's)."),
    ] = None,
    preselect_weight: Annotated[
        float | None,
        typer.Option(help="... fusing in the dual encoder's score with this weight (default: the preset's)."),
    ] = None,
    rerank_queries: Annotated[
        int | None, typer.Option(min=1, help="Rerank a seeded sample of this many captions (default: all).")
    ] = None,
    agent: Annotated[
        bool | None,
        typer.Option(
            help="Scene benchmark: also composed queries (with a compose stage) and dialogue search through the "
            "preset, beside their baselines (default: on for presets with a language-model stage)."
        ),
    ] = None,
    dialogue_variant: Annotated[
        list[str] | None,
        typer.Option(
            "--dialogue-variant",
            help="QUESTIONER+REFORMULATOR for the dialogue part (repeatable; the random+concat and grounded+concat "
            "baselines always run). Default: grounded+rule.",
        ),
    ] = None,
    dialogue_queries: Annotated[int, typer.Option(min=1, help="Dialogues (seeded partial queries).")] = 100,
    dialogue_rounds: Annotated[int, typer.Option(min=1, max=20, help="Questions per dialogue.")] = 10,
    index: Annotated[
        Path | None,
        typer.Option(
            "--index",
            "-i",
            help="With a preset that has a genid stage: the index its identifier model memorised (the split's "
            "captions of the images it holds are decoded there, beside CLIP on the same index).",
        ),
    ] = None,
    genid_queries: Annotated[
        int | None, typer.Option(min=1, help="... a seeded sample of this many of those captions (default: all).")
    ] = None,
) -> None:
    """Recall@1/5/10 text→image and image→text (plus the scene query sets), as JSON and a table."""
    from ...adapters.registry import load_encoder, portable_entry
    from ..eval.plots import plot_recall_curves
    from ..eval.retrieval import (
        EvalDataError,
        evaluate_retrieval,
        load_karpathy,
        load_manifest,
        work_dir_for,
    )
    from ..reports import save_report
    from ..stages.presets import load_preset

    scenes = dataset.is_dir() and (dataset / "scenes.json").is_file()
    if not scenes and (dataset.suffix not in (".json", ".jsonl") or not dataset.is_file()):
        what = "not found" if not dataset.exists() else "not an evaluation set"
        raise EvalDataError(f"{dataset}: {what}: give a Karpathy .json, a .jsonl manifest, or a scene benchmark folder")
    preset = load_preset(config or "default")
    genid = next((spec.config for spec in preset.stages if spec.name == "genid"), None)
    if genid is not None and index is None:  # checked before any work
        fail(
            f"preset {preset.name} has a genid stage, whose model memorised one index: pass --index DIR "
            "(the index given to `viewfinder train genid`)"
        )
    if genid is not None and not scenes and dataset.suffix != ".jsonl":
        fail("the genid stage is evaluated on a JSONL manifest or a scene benchmark folder")
    encoder = load_encoder(preset.encoder)
    entry = portable_entry(preset.encoder)
    cache = work_dir or work_dir_for(dataset)
    if scenes:
        from ..eval.scenes import evaluate_scene_split

        matcher = _preset_model(preset, "rerank", "matcher")
        rerank = _rerank_settings(preset, rerank_k, itm_k, preselect_weight)
        report = evaluate_scene_split(
            dataset,
            split,
            encoder,
            preset.index,
            cache,
            entry,
            matcher=matcher,
            rerank=rerank,
            rerank_queries=rerank_queries,
            captioner=_preset_model(preset, "caption", "captioner"),
        )
        from ..stages.registry import has_stage

        if agent if agent is not None else has_stage((s.name for s in preset.stages), uses_llm=True):
            from ..eval.agent import agent_scene_report
            from ..eval.dialogue import DIALOGUE_BASELINES
            from ..eval.retrieval import eval_index_dir

            variants = list(dict.fromkeys([*DIALOGUE_BASELINES, *(dialogue_variant or [])]))
            report["agent"] = agent_scene_report(
                dataset, split, preset, eval_index_dir(cache, split, encoder.fingerprint),
                dialogue_variants=variants, dialogue_queries=dialogue_queries, rounds=dialogue_rounds,
            )  # fmt: skip
    elif dataset.suffix == ".json":
        report = evaluate_retrieval(
            load_karpathy(dataset, split, images), encoder, preset.index, cache, encoder_entry=entry
        )
    else:
        evalset = load_manifest(dataset, None if split == "test" and not _has_splits(dataset) else split)
        report = evaluate_retrieval(evalset, encoder, preset.index, cache, encoder_entry=entry)
    if genid is not None and index is not None:
        report["genid"] = _genid_part(preset, genid, dataset, split, scenes, index, genid_queries)
    report["command"] = "viewfinder " + " ".join(sys.argv[1:])
    report["preset"] = preset.name
    out = out or Path(f"eval-{dataset.stem}-{split}.json")
    save_report(report, out)
    _print_report(report)
    if "genid" in report:
        from .agent_eval import print_genid_table

        g = report["genid"]
        print_genid_table(g, f"genid: {g['n_queries']} captions -> {g['items']} images of {g['index']}")
    console.print(f"report: {out}")
    if plot:
        png = plot_recall_curves(report, out.with_suffix(".png"))
        console.print(f"chart: {png}")


def _genid_part(
    preset: Any, genid: Any, dataset: Path, split: str, scenes: bool, index: Path, n_queries: int | None
) -> dict[str, Any]:
    """The genid stage's model on the index it memorised, beside CLIP there: alone, with the preset's
    fusion and with the other fusion settings (the one best on a tuning half reported on the rest)."""
    from ..eval.genid import DEFAULT_FUSIONS, genid_report
    from ..stages.genid import model_folder

    manifest = dataset / f"{split}.jsonl" if scenes else dataset
    folder = Path(preset.source).parent if preset.source and Path(preset.source).is_file() else None
    own = [] if genid.fusion == "none" else [(genid.fusion, genid.weight)]
    fusions = list(dict.fromkeys([*own, *DEFAULT_FUSIONS]))
    part = genid_report(manifest, index, [model_folder(genid.model, folder)], n_queries=n_queries, k=genid.k,
                        beams=genid.beams, rrf_k=genid.rrf_k, fusions=fusions)  # fmt: skip
    part["preset_fusion"] = None if genid.fusion == "none" else f"{genid.fusion}:{genid.weight:g}"
    return part


def _preset_model(preset: Any, stage: str, kind: str) -> Any:
    """The model of the preset's ``stage`` (rerank: its matcher, caption: its captioner), loaded; None
    when the preset has no such stage."""
    from ...adapters.registry import load_entry, load_model

    for spec in preset.stages:
        if spec.name == stage:
            relative_to = Path(preset.source).parent if preset.source and Path(preset.source).is_file() else None
            return load_model(load_entry(spec.config.model, kind, relative_to=relative_to), kind)
    return None


def _rerank_settings(preset: Any, k: int | None, itm_k: int | None, preselect_weight: float | None) -> Any:
    """The preset's rerank stage settings, with ``k`` / ``itm_k`` / ``preselect_weight`` overridden where given."""
    from dataclasses import replace

    from ..stages.rerank import RerankConfig

    found = next((spec.config for spec in preset.stages if spec.name == "rerank"), RerankConfig())
    given = (("k", k), ("itm_k", itm_k), ("preselect_weight", preselect_weight))
    changes = {name: value for name, value in given if value is not None}
    return replace(found, **changes)


def _has_splits(manifest: Path) -> bool:
    """Whether the manifest's first record names a split (a malformed line is left to :func:`load_manifest`)."""
    with manifest.open(encoding="utf-8") as fh:
        first = next((line for line in fh if line.strip()), "{}")
    try:
        record = json.loads(first)
    except json.JSONDecodeError:
        return False
    return isinstance(record, dict) and "split" in record
