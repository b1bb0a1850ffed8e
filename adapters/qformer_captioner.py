"""An offline scene captioner in BLIP-2's shape (the ``qformer_clip_captioner`` family).

The structure of ``Blip2ForConditionalGeneration``, with small parts: the frozen scene CLIP's
vision tokens (:func:`.frozen_clip.clip_vision_tokens`, (B, 65, 128) for the zoo's
``scene-clip``) -> a Q-Former (``transformers.Blip2QFormerModel``: learned query tokens that
cross-attend to the vision tokens) -> a linear *language projection* -> a causal language model
(``transformers.GPT2LMHeadModel``) whose input is [projected query outputs] + [caption token
embeddings], trained with next-token cross-entropy on the caption tokens only.

**Why a tiny LM trained from scratch, and not the frozen SmolLM2-135M (BLIP-2 stage 2).** The
captioner runs inside the query loop: each round captions the top candidates (up to 128) so that
the rewriter can read them. SmolLM2-135M generates ~20 tokens/s at batch 1 on 2 CPU cores (design
notes, estimated not re-measured here); 128 captions of ~20 words are ~2,500 tokens, about two
minutes per round at batch 1 and still tens of seconds with batching, and BLIP-2 stage 2 would also
need a long run to align the query tokens to a 135M-parameter model. The scene captions use a
closed vocabulary of 54 tokens, which a 4-layer, 192-wide GPT-2 learns from scratch. Measured on
2 shared CPU cores with the zoo's scene CLIP and the default :class:`CaptionerArch` (3.5M
parameters): greedy captions of a batch of 128 scene images take 0.44 s, CLIP included (~290
images/s, ~18 words each; the CLIP's share is 0.09 s); 3-beam search 1.3 s; sampling 0.46 s.
Training runs at ~160 samples/s (batch 128).

The tokenizer is a word-level vocabulary built from the training captions (:class:`CaptionVocab`;
``[PAD]``, ``[BOS]``, ``[EOS]``, ``[UNK]`` first, then the words sorted), saved as JSON.

A model folder holds ``captioner_config.json`` (architecture + which CLIP entry it sits on),
``captioner.safetensors`` (Q-Former, projection and LM; the CLIP comes from its own entry) and
``vocab.json``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from .decoding import check_decoding
from .entries import ConfigError, ModelEntry, from_dict
from .frozen_clip import FrozenClipVision, clip_vision_width, frozen, heads_fingerprint, new_qformer

logger = logging.getLogger(__name__)

CONFIG_FILE = "captioner_config.json"
WEIGHTS_FILE = "captioner.safetensors"
VOCAB_FILE = "vocab.json"

PAD, BOS, EOS, UNK = "[PAD]", "[BOS]", "[EOS]", "[UNK]"
SPECIAL_TOKENS: tuple[str, ...] = (PAD, BOS, EOS, UNK)
"""Special tokens, ids 0-3 in this order."""
UNK_ID = SPECIAL_TOKENS.index(UNK)
IGNORE_INDEX = -100


@dataclass
class CaptionerArch:
    """Architecture of the captioner heads (data: saved in ``captioner_config.json``)."""

    qformer_hidden: int = 192
    qformer_layers: int = 3
    qformer_heads: int = 4
    qformer_intermediate: int = 768
    num_query_tokens: int = 16
    cross_attention_frequency: int = 1
    """A cross-attention block every this many Q-Former layers (BLIP-2 uses 2)."""
    lm_hidden: int = 192
    lm_layers: int = 4
    lm_heads: int = 4
    max_caption_tokens: int = 48
    """Longest caption in tokens, [EOS] included (longer training captions are cut)."""
    dropout: float = 0.1

    def __post_init__(self) -> None:
        for name in (
            "qformer_hidden", "qformer_layers", "qformer_heads", "qformer_intermediate", "num_query_tokens",
            "cross_attention_frequency", "lm_hidden", "lm_layers", "lm_heads", "max_caption_tokens",
        ):  # fmt: skip
            if getattr(self, name) < 1:
                raise ConfigError(f"captioner: field {name!r} must be >= 1")
        if self.qformer_hidden % self.qformer_heads:
            raise ConfigError("captioner: 'qformer_hidden' must be a multiple of 'qformer_heads'")
        if self.lm_hidden % self.lm_heads:
            raise ConfigError("captioner: 'lm_hidden' must be a multiple of 'lm_heads'")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError("captioner: field 'dropout' must lie in [0, 1)")


# ---------------------------------------------------------------------------------------- vocab
_WORD_RE = re.compile(r"[a-z0-9]+|[^\sa-z0-9]")


def split_words(text: str) -> list[str]:
    """Lower-cased words and single punctuation marks: ``"on the left, a"`` -> on the left , a."""
    return _WORD_RE.findall(text.lower())


class CaptionVocab:
    """A word-level vocabulary: ids for words and punctuation marks, special tokens first."""

    def __init__(self, tokens: Sequence[str]) -> None:
        tokens = list(tokens)
        if tuple(tokens[: len(SPECIAL_TOKENS)]) != SPECIAL_TOKENS:
            raise ValueError(f"a caption vocabulary starts with {list(SPECIAL_TOKENS)}")
        if len(set(tokens)) != len(tokens):
            raise ValueError("a caption vocabulary has each token once")
        self.tokens = tokens
        self.ids = {t: i for i, t in enumerate(tokens)}
        self.pad_id, self.bos_id, self.eos_id, self.unk_id = (self.ids[t] for t in SPECIAL_TOKENS)

    @classmethod
    def build(cls, captions: Iterable[str]) -> CaptionVocab:
        """Every word of ``captions``, sorted (deterministic: the same captions, the same ids)."""
        words = {w for c in captions for w in split_words(c)}
        return cls([*SPECIAL_TOKENS, *sorted(words - set(SPECIAL_TOKENS))])

    def __len__(self) -> int:
        return len(self.tokens)

    def encode(self, text: str) -> list[int]:
        """Word ids, no special tokens; unknown words become ``[UNK]``."""
        return [self.ids.get(w, self.unk_id) for w in split_words(text)]

    def encode_batch(self, texts: Sequence[str], length: int) -> torch.Tensor:
        """(N, length) int64 rows ``[BOS] words [EOS] [PAD]...``, cut to ``length``."""
        out = torch.full((len(texts), length), self.pad_id, dtype=torch.long)
        for row, text in enumerate(texts):
            ids = [self.bos_id, *self.encode(text), self.eos_id][:length]
            out[row, : len(ids)] = torch.tensor(ids)
        return out

    def decode(self, ids: Iterable[int]) -> str:
        """Text up to the first ``[EOS]``; punctuation joins the word before it."""
        text = ""
        for i in ids:
            i = int(i)
            if i == self.eos_id:
                break
            if i in (self.pad_id, self.bos_id) or not 0 <= i < len(self.tokens):
                continue
            word = self.tokens[i]
            if text and len(word) == 1 and not word.isalnum():
                text += word
            else:
                text += (" " if text else "") + word
        return text

    def to_json(self) -> str:
        return json.dumps({"tokens": self.tokens}, indent=0) + "\n"

    @classmethod
    def from_json(cls, text: str) -> CaptionVocab:
        return cls(json.loads(text)["tokens"])


# ---------------------------------------------------------------------------------------- model
class CaptionerHeads(nn.Module):
    """Query tokens, the Q-Former, the language projection and the small causal LM."""

    def __init__(self, arch: CaptionerArch, vision_width: int, vocab: CaptionVocab) -> None:
        from transformers import GPT2Config, GPT2LMHeadModel

        super().__init__()
        self.arch = arch
        self.qformer, self.query_tokens = new_qformer(
            hidden_size=arch.qformer_hidden,
            num_layers=arch.qformer_layers,
            num_heads=arch.qformer_heads,
            intermediate_size=arch.qformer_intermediate,
            num_query_tokens=arch.num_query_tokens,
            cross_attention_frequency=arch.cross_attention_frequency,
            vision_width=vision_width,
            dropout=arch.dropout,
        )
        self.language_projection = nn.Linear(arch.qformer_hidden, arch.lm_hidden)
        lm_config = GPT2Config(
            vocab_size=len(vocab),
            n_positions=arch.num_query_tokens + arch.max_caption_tokens + 1,
            n_embd=arch.lm_hidden,
            n_layer=arch.lm_layers,
            n_head=arch.lm_heads,
            resid_pdrop=arch.dropout,
            embd_pdrop=arch.dropout,
            attn_pdrop=arch.dropout,
            bos_token_id=vocab.bos_id,  # GPT2Config defaults these to 50256
            eos_token_id=vocab.eos_id,
            pad_token_id=vocab.pad_id,
            tie_word_embeddings=True,
        )
        self.lm = GPT2LMHeadModel(lm_config)

    def prefix(self, vision: torch.Tensor) -> torch.Tensor:
        """(B, N, W) vision tokens -> (B, Q, E) projected query outputs: the LM's soft prompt."""
        queries = self.query_tokens.expand(vision.shape[0], -1, -1)
        states = self.qformer(query_embeds=queries, encoder_hidden_states=vision).last_hidden_state
        return self.language_projection(states)

    def forward(self, vision: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """Mean next-token cross-entropy over the caption tokens.

        ``ids`` (B, L): ``[BOS] words [EOS] [PAD]...``. The LM reads [prefix] + ids[:, :-1] and
        predicts ids[:, 1:]; padding is not predicted. Attention is causal, so right padding needs
        no mask: no real token attends to a later pad.
        """
        inputs, targets = ids[:, :-1], ids[:, 1:]
        embeds = torch.cat([self.prefix(vision), self.lm.get_input_embeddings()(inputs)], dim=1)
        logits = self.lm(inputs_embeds=embeds).logits[:, self.arch.num_query_tokens :]  # (B, L-1, V)
        targets = targets.masked_fill(targets == self.lm.config.pad_token_id, IGNORE_INDEX)
        return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1))


# ---------------------------------------------------------------------------------------- decoding
@dataclass
class Decoding:
    """Checked decoding options (:func:`.decoding.check_decoding`, without ``prompt``: this model
    takes none): greedy by default, beam search (``num_beams``), or sampling (``do_sample`` with
    ``temperature``, ``top_p``, ``top_k``; ``seed`` makes a draw repeatable)."""

    max_new_tokens: int
    min_new_tokens: int = 0
    num_beams: int = 1
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    repetition_penalty: float = 1.0
    length_penalty: float = 1.0
    seed: int | None = None

    @classmethod
    def parse(cls, options: dict[str, object], default_max_tokens: int) -> Decoding:
        """``options`` checked (a :class:`ConfigError` names a wrong one), ``max_new_tokens`` defaulting
        to ``default_max_tokens``."""
        return cls(**check_decoding(options, {"max_new_tokens": default_max_tokens}, takes_prompt=False))


class QFormerCaptioner(FrozenClipVision):
    """The ``ImageCaptioner`` over a frozen open_clip CLIP plus trained :class:`CaptionerHeads`.

    Its ``image_features`` are the same vision tokens as a matcher's on the same CLIP, so one feature
    cache can serve both.
    """

    def __init__(
        self,
        clip: nn.Module,
        transform: Callable[[Image.Image], torch.Tensor],
        heads: CaptionerHeads,
        vocab: CaptionVocab,
        *,
        name: str,
        clip_fingerprint: str,
        device: torch.device | None = None,
        batch_size: int = 64,
        precision: str = "fp32",
    ) -> None:
        super().__init__(clip, transform, device=device, batch_size=batch_size)
        self.name = name
        self.precision = precision
        self.heads = heads.eval().to(self.device)
        self.vocab = vocab
        self.fingerprint = captioner_fingerprint(clip_fingerprint, heads, vocab)

    def caption(self, pixels: torch.Tensor, **decoding: object) -> list[str]:
        """(B, 3, H, W) preprocessed pixels -> B captions. Greedy by default; ``num_beams`` for beam
        search; ``do_sample=True`` (with ``temperature``, ``top_p``, ``top_k``, ``seed``) samples;
        ``max_new_tokens`` / ``min_new_tokens`` bound the length (:mod:`.decoding`). Any other
        option is a :class:`ConfigError`."""
        options = Decoding.parse(decoding, self.heads.arch.max_caption_tokens)
        return self._caption(self.image_features(pixels), options)

    def caption_features(self, features: torch.Tensor, **decoding: object) -> list[str]:
        """Captions from cached vision tokens (:meth:`image_features`); options as :meth:`caption`."""
        options = Decoding.parse(decoding, self.heads.arch.max_caption_tokens)
        return self._caption(features, options)

    def caption_images(self, images: Sequence[Image.Image], **decoding: object) -> list[str]:
        """PIL images -> captions."""
        pixels = torch.stack([self._transform(im.convert("RGB")) for im in images])
        return self.caption(pixels, **decoding)

    @torch.inference_mode()
    def _caption(self, features: torch.Tensor, options: Decoding) -> list[str]:
        out: list[str] = []
        rng = contextlib.nullcontext()
        if options.seed is not None:  # a seeded draw that leaves the global RNG as it was
            rng = torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else [])
        with rng:
            if options.seed is not None:
                torch.manual_seed(options.seed)
            for lo in range(0, len(features), self.batch_size):
                vision = features[lo : lo + self.batch_size].to(self.device, torch.float32)
                with self._autocast():
                    ids = generate_ids(self.heads, vision, options)
                out.extend(self.vocab.decode(row) for row in ids.tolist())
        return out

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.device.type == "cuda" and self.precision in ("fp16", "bf16"):
            dtype = torch.float16 if self.precision == "fp16" else torch.bfloat16
            return torch.autocast("cuda", dtype=dtype)
        return contextlib.nullcontext()


def generate_ids(heads: CaptionerHeads, vision: torch.Tensor, options: Decoding) -> torch.Tensor:
    """(B, N, W) vision tokens -> (B, T) generated token ids (after [BOS]; [EOS] then pads end a row)."""
    lm = heads.lm
    bos = torch.full((len(vision), 1), lm.config.bos_token_id, dtype=torch.long, device=vision.device)
    embeds = torch.cat([heads.prefix(vision), lm.get_input_embeddings()(bos)], dim=1)
    room = lm.config.n_positions - embeds.shape[1]
    kwargs: dict[str, Any] = {
        "inputs_embeds": embeds,
        "attention_mask": torch.ones(embeds.shape[:2], dtype=torch.long, device=vision.device),
        "max_new_tokens": max(1, min(options.max_new_tokens, room)),
        "num_beams": options.num_beams,
        "do_sample": options.do_sample,
        "repetition_penalty": options.repetition_penalty,
        "eos_token_id": lm.config.eos_token_id,
        "pad_token_id": lm.config.eos_token_id,  # finished rows fill with [EOS] (decode stops at the first)
        "bos_token_id": lm.config.bos_token_id,
        "suppress_tokens": [lm.config.pad_token_id, lm.config.bos_token_id, UNK_ID],  # never in a caption
    }
    if options.min_new_tokens:
        kwargs["min_new_tokens"] = min(options.min_new_tokens, kwargs["max_new_tokens"])
    if options.do_sample:
        kwargs.update(temperature=options.temperature, top_p=options.top_p, top_k=options.top_k)
    if options.num_beams > 1:
        kwargs.update(early_stopping=True, length_penalty=options.length_penalty)
    return lm.generate(**kwargs)  # decoder-only with inputs_embeds: only the new tokens come back


def captioner_fingerprint(clip_fingerprint: str, heads: CaptionerHeads, vocab: CaptionVocab) -> str:
    """Digest of the CLIP's fingerprint, the architecture, the weights and the vocabulary."""
    return heads_fingerprint(clip_fingerprint, heads, vocab.to_json())


# ---------------------------------------------------------------------------------------- files
def save_captioner_dir(
    heads: CaptionerHeads,
    vocab: CaptionVocab,
    folder: Path,
    *,
    encoder_entry: str | dict[str, Any],
    fp16: bool = False,
) -> Path:
    """Write ``heads`` as a model folder: config (arch + the CLIP entry it sits on), weights, vocab."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = heads.state_dict()
    # tied LM head: safetensors refuses shared tensors, and the embedding already holds them
    state = {k: v for k, v in state.items() if k != "lm.lm_head.weight"}
    state = {
        k: (v.half() if fp16 and v.is_floating_point() else v).detach().cpu().contiguous() for k, v in state.items()
    }
    save_file(state, str(folder / WEIGHTS_FILE))
    (folder / VOCAB_FILE).write_text(vocab.to_json(), encoding="utf-8")
    config = {"arch": asdict(heads.arch), "encoder": encoder_entry, "vocab_size": len(vocab)}
    (folder / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return folder


def read_captioner_dir(entry: ModelEntry) -> tuple[CaptionerArch, Any, CaptionVocab, dict[str, torch.Tensor]]:
    """A ``qformer_clip_captioner`` folder's architecture, CLIP entry reference, vocabulary and float32
    weights (checked against the entry's sha256 when it gives one)."""
    from safetensors.torch import load_file

    from .open_clip_encoder import ModelLoadError, sha256_file

    folder = entry.local_folder()
    missing = [f for f in (CONFIG_FILE, WEIGHTS_FILE, VOCAB_FILE) if not (folder / f).is_file()]
    if missing:
        hint = (
            "train one with `viewfinder train captioner` (configs/train/scene-captioner.yaml) and name its "
            "model folder (runs/NAME/model), or a `local-dir` model entry pointing at it"
        )
        if entry.weights == "zoo" and folder.is_dir():
            hint = "reinstall viewfinder"
        raise ModelLoadError(f"model {entry.name!r}: {folder} has no {', '.join(missing)}: {hint}")
    if entry.sha256 and sha256_file(folder / WEIGHTS_FILE) != entry.sha256:
        raise ModelLoadError(f"model {entry.name!r}: checksum mismatch for {folder / WEIGHTS_FILE}: reinstall it")
    config = json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))
    arch = from_dict(CaptionerArch, config["arch"], str(folder / CONFIG_FILE))
    vocab = CaptionVocab.from_json((folder / VOCAB_FILE).read_text(encoding="utf-8"))
    if config.get("vocab_size", len(vocab)) != len(vocab):
        raise ModelLoadError(f"model {entry.name!r}: {VOCAB_FILE} does not match {CONFIG_FILE} in {folder}")
    state = {k: v.float() for k, v in load_file(str(folder / WEIGHTS_FILE)).items()}
    state.setdefault("lm.lm_head.weight", state["lm.transformer.wte.weight"])
    return arch, config["encoder"], vocab, state


def load_qformer_captioner(entry: ModelEntry) -> QFormerCaptioner:
    """Load a ``qformer_clip_captioner`` entry: the CLIP its folder config names, then the heads."""
    from .open_clip_encoder import pick_device
    from .registry import load_encoder

    arch, encoder_ref, vocab, state = read_captioner_dir(entry)
    encoder = load_encoder(encoder_ref)
    clip = frozen(encoder.model)
    heads = CaptionerHeads(arch, vision_width=clip_vision_width(clip), vocab=vocab)
    heads.load_state_dict(state)
    return QFormerCaptioner(
        clip,
        encoder.image_transform,
        heads,
        vocab,
        name=entry.name,
        clip_fingerprint=encoder.fingerprint,
        device=pick_device(entry.device),
        batch_size=entry.batch_size,
        precision=entry.precision,
    )


__all__ = [
    "CaptionVocab",
    "CaptionerArch",
    "CaptionerHeads",
    "Decoding",
    "QFormerCaptioner",
    "captioner_fingerprint",
    "generate_ids",
    "load_qformer_captioner",
    "read_captioner_dir",
    "save_captioner_dir",
    "split_words",
]
