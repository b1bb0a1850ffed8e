"""The synthetic scene benchmark: scene graphs, pictures, captions, query sets and metrics.

Modules, one job each: :mod:`.graph` (vocabulary and scene graph), :mod:`.generator` (seeded
scenes, held-out pairs), :mod:`.render` (pictures), :mod:`.captions` (paraphrase templates),
:mod:`.edits` (single edits for composed queries), :mod:`.queries` (query sets with ground
truth), :mod:`.metrics` (model-agnostic scores), :mod:`.simuser` (a simulated user),
:mod:`.dataset` (write/read a dataset folder); its commands are in :mod:`viewfinder.pipeline.cli.scenes`.
"""

from .captions import all_captions, caption_scene
from .dataset import QuerySetConfig, SceneDataset, is_scene_dataset, load_scene_dataset, write_scene_dataset
from .generator import SPLITS, SceneGeneratorConfig, generate_scenes, held_out_pairs, split_rng
from .graph import BACKGROUNDS, COLOURS, POSITIONS, SHAPES, SIZES, Scene, SceneObject
from .metrics import partial_query_report, recall_at_k, swap_accuracy
from .queries import (
    BindingSwapQuery,
    ComposedQuery,
    FullQuery,
    PartialQuery,
    Query,
    RelationSwapQuery,
    read_queries,
    write_queries,
)
from .render import render_scene
from .simuser import SimulatedUser

__all__ = [
    "BACKGROUNDS",
    "COLOURS",
    "POSITIONS",
    "SHAPES",
    "SIZES",
    "SPLITS",
    "BindingSwapQuery",
    "ComposedQuery",
    "FullQuery",
    "PartialQuery",
    "Query",
    "QuerySetConfig",
    "RelationSwapQuery",
    "Scene",
    "SceneDataset",
    "SceneGeneratorConfig",
    "SceneObject",
    "SimulatedUser",
    "all_captions",
    "caption_scene",
    "generate_scenes",
    "held_out_pairs",
    "is_scene_dataset",
    "load_scene_dataset",
    "partial_query_report",
    "read_queries",
    "recall_at_k",
    "render_scene",
    "split_rng",
    "swap_accuracy",
    "write_queries",
    "write_scene_dataset",
]
