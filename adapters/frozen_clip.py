"""A frozen open_clip CLIP used as the vision (and text) backbone of the Q-Former models.

The project's Q-Former matcher and captioner both sit on a frozen CLIP, BLIP-2's recipe: this
module holds what they share — reading the CLIP's vision tokens and text token states, and the
vision side of their adapters (transform, batched features, feature shape), so both produce the
same features from the same CLIP and a feature cache can serve both.
"""

from __future__ import annotations

import hashlib
import json
import weakref
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

import torch
from PIL import Image
from torch import nn

from .entries import ConfigError
from .open_clip_encoder import weights_digest

# ---------------------------------------------------------------------------------- vision tokens
# What the Q-Former cross-attends to, read from the CLIP's vision tower. Three kinds of tower:
#
# * a ViT (open_clip ``VisionTransformer``): by default its output tokens, (B, 1 + G*G, W): the
#   pooled, projected token (cut to W) then the G*G patch tokens after ``ln_post``. Unchanged since
#   the first zoo: the shipped reranker and captioner were trained on exactly these. Its layers can
#   also be read by name: ``stem`` (patch embedding + positions + ``ln_pre``) and ``block1`` ..
#   ``blockN``, each (B, 1 + G*G, W), class token first.
# * a convolutional tower (open_clip ``ModifiedResNet``; stages ``stem``, ``layer1`` .. ``layer4``)
#   or a timm tower (open_clip ``TimmModel``, its ``timm_model_name``; stages named by the trunk's
#   ``feature_info`` modules): a stage's feature map (B, C, H, W) becomes a token grid (B, H*W, C),
#   row-major, layer-normed per token (as BLIP-2's ``ln_vision``, here without parameters: every
#   tower and stage gets one scale, that of the position code), plus a fixed 2-D sin-cos position
#   code, so that "left of" and "above" stay readable by cross-attention. No pooled token. The
#   default stage is the finest whose grid is at most 8 x 8 at the tower's image size (the later
#   one on a tie).
#
# ``qformer`` names what the Q-Former reads by default and ``last`` the tower's last layer.

QFORMER_LAYER = "qformer"
"""Layer name: the tokens :func:`clip_vision_tokens` gives by default (what the Q-Former reads)."""
LAST_LAYER = "last"
"""Layer name: the tower's last readable layer."""
MAX_DEFAULT_GRID = 8
"""The default conv stage is the finest whose grid is at most this many tokens a side."""

TowerKind = Literal["vit", "resnet", "timm"]


@dataclass(frozen=True)
class VisionLayer:
    """One readable layer of a CLIP vision tower: the token grid it gives at the tower's image size."""

    name: str
    grid: tuple[int, int]
    """(H, W) of its token grid."""
    width: int
    """Channels per token."""
    extra_tokens: int = 0
    """Tokens before the grid (a ViT's class or pooled token; 0 for a conv stage)."""

    @property
    def tokens(self) -> int:
        return self.extra_tokens + self.grid[0] * self.grid[1]


def tower_kind(visual: nn.Module) -> TowerKind:
    """Which kind of open_clip vision tower ``visual`` is (an error for one the reader cannot read)."""
    from open_clip.modified_resnet import ModifiedResNet
    from open_clip.transformer import VisionTransformer

    if isinstance(visual, VisionTransformer):
        return "vit"
    if isinstance(visual, ModifiedResNet):
        return "resnet"
    if type(visual).__name__ == "TimmModel" and hasattr(visual, "trunk"):
        return "timm"
    raise ConfigError(
        f"vision tower {type(visual).__name__} has no token reader: the Q-Former models read an open_clip "
        "VisionTransformer, ModifiedResNet or timm tower (vision_cfg 'timm_model_name'); pick one of those"
    )


def tower_image_size(visual: nn.Module) -> tuple[int, int]:
    """(H, W) the tower takes (``image_size`` is an int on a ModifiedResNet, a pair elsewhere)."""
    size = getattr(visual, "image_size", 64)
    return (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1]))


def grid_position_code(height: int, width: int, dim: int, *, device: Any = None, dtype: Any = None) -> torch.Tensor:
    """(H*W, dim) fixed 2-D sin-cos position code of a row-major grid (MAE's): the first half of the
    channels encodes the row, the second the column, each as sines then cosines of dim/4 frequencies
    (1 .. 1/10000 per cell); channels past 4 * (dim // 4) stay zero. Values in [-1, 1]."""
    quarter = dim // 4
    omega = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float64) / max(quarter, 1))  # (dim/4,)
    rows, cols = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    row = rows.reshape(-1, 1).double() * omega  # (H*W, dim/4)
    col = cols.reshape(-1, 1).double() * omega
    code = torch.cat([row.sin(), row.cos(), col.sin(), col.cos()], dim=1)  # (H*W, 4 * (dim // 4))
    code = torch.nn.functional.pad(code, (0, dim - code.shape[1]))  # (H*W, dim)
    return code.to(device=device, dtype=dtype or torch.float32)


def feature_map_tokens(fmap: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) a conv stage's feature map -> (B, H*W, C) tokens, layer-normed, plus positions."""
    _, channels, height, width = fmap.shape
    tokens = fmap.flatten(2).transpose(1, 2)  # (B, H*W, C), row-major
    tokens = torch.nn.functional.layer_norm(tokens, (channels,))
    return tokens + grid_position_code(height, width, channels, device=fmap.device, dtype=fmap.dtype)


_CONV_LAYERS: weakref.WeakKeyDictionary[nn.Module, list[VisionLayer]] = weakref.WeakKeyDictionary()
"""Conv tower -> its stages' shapes, measured once (a forward of one blank image)."""


def vision_layers(clip: nn.Module) -> list[VisionLayer]:
    """Every readable layer of the CLIP's vision tower, from the input side out (not the aliases
    ``qformer`` and ``last``)."""
    visual = clip.visual
    if tower_kind(visual) == "vit":
        grid = (int(visual.grid_size[0]), int(visual.grid_size[1]))
        width = int(visual.transformer.width)
        names = ["stem", *(f"block{i + 1}" for i in range(len(visual.transformer.resblocks)))]
        return [VisionLayer(name, grid, width, extra_tokens=1) for name in names]
    if visual not in _CONV_LAYERS:
        _CONV_LAYERS[visual] = _measure_conv_layers(visual)
    return list(_CONV_LAYERS[visual])


def _conv_stage_names(visual: nn.Module, count: int) -> list[str]:
    if tower_kind(visual) == "resnet":
        return ["stem", "layer1", "layer2", "layer3", "layer4"]
    info = getattr(visual.trunk, "feature_info", None)
    names = [str(f["module"]) for f in info] if isinstance(info, list) else []
    return names if len(names) == count and len(set(names)) == count else [f"stage{i}" for i in range(count)]


@torch.no_grad()
def _measure_conv_layers(visual: nn.Module) -> list[VisionLayer]:
    """The stages' grids and widths, from one blank image (in eval mode: batch norm keeps its
    statistics; the modules' modes are put back after)."""
    param = next(visual.parameters())
    blank = torch.zeros(1, 3, *tower_image_size(visual), device=param.device, dtype=param.dtype)
    training = {m: m.training for m in visual.modules() if m.training}
    visual.eval()
    try:
        maps = _conv_feature_maps(visual, blank, None)  # every stage: [(1, C, H, W), ...]
    finally:
        for module, mode in training.items():
            module.train(mode)
    names = _conv_stage_names(visual, len(maps))
    return [
        VisionLayer(n, (int(m.shape[2]), int(m.shape[3])), int(m.shape[1])) for n, m in zip(names, maps, strict=True)
    ]


def _conv_feature_maps(visual: nn.Module, pixels: torch.Tensor, indices: list[int] | None) -> list[torch.Tensor]:
    """(B, 3, H, W) -> the feature maps (B, C_i, H_i, W_i) of the stages at ``indices`` (all: None),
    in the order asked; stops after the last stage asked."""
    if tower_kind(visual) == "resnet":
        stages = [visual.stem, visual.layer1, visual.layer2, visual.layer3, visual.layer4]
        wanted = range(len(stages)) if indices is None else indices
        maps: dict[int, torch.Tensor] = {}
        x = pixels
        for i, stage in enumerate(stages[: max(wanted) + 1]):
            x = stage(x)
            maps[i] = x
        return [maps[i] for i in wanted]
    out = visual.forward_intermediates(  # open_clip's TimmModel -> timm's forward_intermediates
        pixels, indices=indices, stop_early=True, intermediates_only=True, output_fmt="NCHW"
    )["image_intermediates"]
    if indices is None:
        return list(out)
    order = sorted(set(indices))  # timm returns the stages it was asked for in stage order
    by_index = dict(zip(order, out, strict=True))
    return [by_index[i] for i in indices]


def default_vision_stage(clip: nn.Module) -> str | None:
    """The stage the Q-Former reads by default: None on a ViT (its output tokens); on a conv or timm
    tower the finest stage whose grid is at most 8 x 8 at its image size (the later one on a tie; the
    last stage when none is that small). E.g. ``layer2`` (8 x 8) of a ModifiedResNet at 64 px."""
    if tower_kind(clip.visual) == "vit":
        return None
    layers = vision_layers(clip)
    small = [(lay.grid[0] * lay.grid[1], i) for i, lay in enumerate(layers) if max(lay.grid) <= MAX_DEFAULT_GRID]
    return layers[max(small)[1]].name if small else layers[-1].name


def vision_layer(clip: nn.Module, name: str | None = None) -> VisionLayer:
    """The layer ``name`` names (a layer, ``qformer``, ``last``; None: ``qformer``), with its shape.
    On a ViT, ``qformer`` is the output tokens (1 + G*G, W); on a conv tower, the default stage."""
    name = name or QFORMER_LAYER
    layers = vision_layers(clip)
    if name == LAST_LAYER:
        return layers[-1]
    if name == QFORMER_LAYER:
        stage = default_vision_stage(clip)
        if stage is None:  # ViT: the output tokens, pooled token first
            return replace(layers[-1], name=QFORMER_LAYER)
        name = stage
    for layer in layers:
        if layer.name == name:
            return layer
    known = ", ".join([QFORMER_LAYER, LAST_LAYER, *(lay.name for lay in layers)])
    raise ConfigError(f"vision layer {name!r} is not in this {type(clip.visual).__name__} tower: one of {known}")


def clip_vision_width(clip: nn.Module, stage: str | None = None) -> int:
    """The width of the tokens :func:`clip_vision_tokens` gives for ``stage``: what a Q-Former on this
    CLIP is built for (``encoder_hidden_size``). A ViT's ``transformer.width``; a conv stage's channels."""
    return vision_layer(clip, stage).width


def clip_vision_tokens(clip: nn.Module, pixels: torch.Tensor, stage: str | None = None) -> torch.Tensor:
    """(B, 3, H, W) -> (B, N, W) the vision tokens the Q-Former reads.

    ``stage`` None: the default (see above). ViT: (B, 1 + G*G, W), the pooled token then its patch
    tokens, exactly as before conv towers were read. Conv tower: (B, H*W, C) of its default stage with
    positions. A named ``stage`` (or ``qformer``, ``last``) reads that layer instead."""
    if stage is None and tower_kind(clip.visual) == "vit":
        return _vit_output_tokens(clip.visual, pixels)
    name = stage or QFORMER_LAYER
    return clip_vision_layers(clip, pixels, [name])[name]


def clip_vision_layers(clip: nn.Module, pixels: torch.Tensor, names: Sequence[str]) -> dict[str, torch.Tensor]:
    """(B, 3, H, W) -> name -> (B, N, W) tokens of each named layer (``qformer`` and ``last`` too),
    in one pass through the tower (plus one for a ViT's ``qformer``)."""
    visual = clip.visual
    wanted = {name: vision_layer(clip, name) for name in names}  # unknown names fail here, before any work
    order = [lay.name for lay in vision_layers(clip)]
    out: dict[str, torch.Tensor] = {}
    if tower_kind(visual) == "vit":
        needed = [order.index(lay.name) for lay in wanted.values() if lay.name != QFORMER_LAYER]
        states = _vit_layer_states(visual, pixels, max(needed)) if needed else []
        for name, lay in wanted.items():
            if lay.name == QFORMER_LAYER:  # only the name ``qformer`` gives this layer: one pass
                out[name] = _vit_output_tokens(visual, pixels)
            else:
                out[name] = states[order.index(lay.name)]
        return out
    indices = sorted({order.index(lay.name) for lay in wanted.values()})
    maps = dict(zip(indices, _conv_feature_maps(visual, pixels, indices), strict=True))
    for name, lay in wanted.items():
        out[name] = feature_map_tokens(maps[order.index(lay.name)])  # (B, H*W, C)
    return out


def _vit_output_tokens(visual: nn.Module, pixels: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) -> (B, 1 + G*G, W): the ViT's pooled token then its patch tokens (the zoo's reader)."""
    previous = visual.output_tokens
    visual.output_tokens = True
    try:
        pooled, tokens = visual(pixels)  # (B, E) projected, (B, G*G, W)
    finally:
        visual.output_tokens = previous
    if pooled.shape[-1] != tokens.shape[-1]:
        pooled = pooled[..., : tokens.shape[-1]]  # keep one width; patch tokens carry the detail
    return torch.cat([pooled[:, None], tokens], dim=1)


def _vit_layer_states(visual: nn.Module, pixels: torch.Tensor, last: int) -> list[torch.Tensor]:
    """(B, 3, H, W) -> [stem, block1, ..., block``last``] states, each (B, 1 + G*G, W), class token first."""
    x = visual.conv1(pixels).flatten(2).transpose(1, 2)  # (B, G*G, W)
    cls = visual.class_embedding.to(x.dtype).view(1, 1, -1).expand(x.shape[0], -1, -1)  # (B, 1, W)
    x = torch.cat([cls, x], dim=1) + visual.positional_embedding.to(x.dtype)  # (B, 1 + G*G, W)
    x = visual.ln_pre(visual.patch_dropout(x))
    states = [x]
    batch_first = getattr(visual.transformer, "batch_first", True)
    for block in visual.transformer.resblocks[:last]:
        x = block(x) if batch_first else block(x.transpose(0, 1)).transpose(0, 1)
        states.append(x)
    return states


def clip_text_states(clip: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    """(T, L) token ids -> (T, L, W) the CLIP text tower's token states (what its pooling reads)."""
    length = ids.shape[1]  # may be shorter than the context: attention is causal, so the states are the same
    x = clip.token_embedding(ids)  # (T, L, W)
    x = x + clip.positional_embedding[:length].to(x.dtype)
    mask = clip.attn_mask[:length, :length] if clip.attn_mask is not None else None
    x = clip.transformer(x, attn_mask=mask)
    return clip.ln_final(x)


def heads_fingerprint(clip_fingerprint: str, heads: nn.Module, extra: str = "") -> str:
    """Digest of the CLIP's fingerprint, the heads' architecture (``heads.arch``) and weights, and ``extra``."""
    text = clip_fingerprint + json.dumps(asdict(heads.arch), sort_keys=True) + weights_digest(heads) + extra
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def new_qformer(
    *,
    hidden_size: int,
    num_layers: int,
    num_heads: int,
    intermediate_size: int,
    num_query_tokens: int,
    cross_attention_frequency: int,
    vision_width: int,
    dropout: float,
    **config: Any,
) -> tuple[nn.Module, nn.Parameter]:
    """A fresh ``transformers.Blip2QFormerModel`` cross-attending to ``vision_width``-wide vision
    tokens, and its (1, Q, hidden) learned query tokens. ``config``: further ``Blip2QFormerConfig``
    fields (``use_qformer_text_input``, ``max_position_embeddings``...).

    The Q-Former is built first, then the query tokens drawn (normal, std 0.02): the order fixes
    what a seeded run draws, so a model trained with this helper reproduces bit for bit.
    """
    from transformers import Blip2QFormerConfig, Blip2QFormerModel

    qformer = Blip2QFormerModel(
        Blip2QFormerConfig(
            hidden_size=hidden_size,
            num_hidden_layers=num_layers,
            num_attention_heads=num_heads,
            intermediate_size=intermediate_size,
            cross_attention_frequency=cross_attention_frequency,
            encoder_hidden_size=vision_width,  # must equal the vision tokens' width (default 1408)
            hidden_dropout_prob=dropout,
            attention_probs_dropout_prob=dropout,
            **config,
        )
    )
    # transformers initialises BLIP-2 query tokens to zeros (all queries alike forever): not here.
    query_tokens = nn.Parameter(torch.randn(1, num_query_tokens, hidden_size) * 0.02)
    return qformer, query_tokens


class FrozenClipVision:
    """The vision side of an adapter on a frozen CLIP: its transform, and batched vision tokens."""

    def __init__(
        self,
        clip: nn.Module,
        transform: Callable[[Image.Image], torch.Tensor],
        *,
        device: torch.device | None = None,
        batch_size: int = 64,
    ) -> None:
        self.device = device or torch.device("cpu")
        self.batch_size = batch_size
        self.clip = clip.eval().to(self.device)
        self._transform = transform
        with torch.inference_mode():
            probe = clip_vision_tokens(self.clip, torch.zeros(1, 3, *tower_image_size(clip.visual), device=self.device))
        self.feature_shape: tuple[int, ...] = tuple(probe.shape[1:])
        """Shape of one image's features: (tokens, width)."""

    @property
    def image_transform(self) -> Callable[[Image.Image], torch.Tensor]:
        return self._transform

    @torch.inference_mode()
    def image_features(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) preprocessed pixels -> (B, *feature_shape) float32 vision tokens (on CPU)."""
        out = [
            clip_vision_tokens(self.clip, pixels[i : i + self.batch_size].to(self.device)).float().cpu()
            for i in range(0, len(pixels), self.batch_size)
        ]
        return torch.cat(out) if out else torch.zeros(0, *self.feature_shape)

    def encode_images(self, images: list[Image.Image]) -> torch.Tensor:
        """PIL images -> (B, *feature_shape) features."""
        return self.image_features(torch.stack([self._transform(im.convert("RGB")) for im in images]))


def frozen(clip: nn.Module) -> nn.Module:
    """``clip`` in fp32 with gradients off (the Q-Former trains on top; the CLIP never does)."""
    clip = clip.float()
    for p in clip.parameters():
        p.requires_grad_(False)
    return clip


__all__ = [
    "LAST_LAYER",
    "QFORMER_LAYER",
    "FrozenClipVision",
    "VisionLayer",
    "clip_text_states",
    "clip_vision_layers",
    "clip_vision_tokens",
    "clip_vision_width",
    "default_vision_stage",
    "feature_map_tokens",
    "frozen",
    "grid_position_code",
    "heads_fingerprint",
    "new_qformer",
    "tower_image_size",
    "tower_kind",
    "vision_layer",
    "vision_layers",
]
