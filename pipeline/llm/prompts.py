"""Prompts as data: YAML files (packaged in ``viewfinder/prompts`` or the user's own) read into
langchain-core ``ChatPromptTemplate``s.

A prompt file has a ``name``, a ``version``, a ``description``, the ``input_variables`` its
template fills and ``messages``: ``[role, text]`` pairs with roles ``system``, ``human``, ``ai``.
The variables a template uses must be exactly the declared ones, so a typo fails when the prompt
is loaded, not mid-run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from langchain_core.prompts import ChatPromptTemplate

from ...adapters.entries import ConfigError, read_yaml

ROLES = ("system", "human", "ai")


@dataclass(frozen=True)
class Prompt:
    """One prompt file, read."""

    name: str
    version: int
    description: str
    input_variables: tuple[str, ...]
    messages: tuple[tuple[str, str], ...]
    source: str

    @property
    def template(self) -> ChatPromptTemplate:
        return ChatPromptTemplate.from_messages(list(self.messages))

    def format(self, **values: Any) -> list[Any]:
        """The chat messages with ``values`` filled in (each value as given: quote data with :func:`quoted`)."""
        missing = sorted(set(self.input_variables) - set(values))
        if missing:
            raise ValueError(f"prompt {self.name!r}: no value for {missing}")
        return self.template.format_messages(**{k: values[k] for k in self.input_variables})


def prompts_root() -> Path:
    return Path(str(resources.files("viewfinder.prompts")))


def packaged_prompts() -> list[str]:
    return sorted(p.stem for p in prompts_root().glob("*.yaml"))


def load_prompt(name_or_file: str | Path) -> Prompt:
    """A packaged prompt by name, or a prompt file by path."""
    path = Path(name_or_file).expanduser()
    if not path.is_file():
        packaged = prompts_root() / f"{name_or_file}.yaml"
        if not packaged.is_file():
            raise ConfigError(f"no prompt named {str(name_or_file)!r}: packaged prompts are {packaged_prompts()}")
        path = packaged
    data = read_yaml(path)
    where = str(path)
    unknown = sorted(set(data) - {"name", "version", "description", "input_variables", "messages"})
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {unknown}")
    messages = data.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ConfigError(f"{where}: 'messages' must be a list of [role, text] pairs")
    pairs = []
    for i, item in enumerate(messages):
        if not (isinstance(item, list) and len(item) == 2 and item[0] in ROLES and isinstance(item[1], str)):
            raise ConfigError(f"{where}: message {i} must be [role, text] with role one of {list(ROLES)}")
        pairs.append((str(item[0]), item[1]))
    declared = tuple(data.get("input_variables") or ())
    prompt = Prompt(
        name=str(data.get("name", path.stem)),
        version=int(data.get("version", 1)),
        description=str(data.get("description", "")).strip(),
        input_variables=declared,
        messages=tuple(pairs),
        source=where,
    )
    try:
        used = set(prompt.template.input_variables)
    except (ValueError, KeyError) as exc:
        raise ConfigError(f"{where}: not a valid template: {exc}") from exc
    if used != set(declared):
        raise ConfigError(f"{where}: the messages use {sorted(used)} but 'input_variables' declares {sorted(declared)}")
    return prompt


def quoted(value: str | list[str]) -> str:
    """User text or captions as quoted data for a prompt: a JSON string (or list of strings), so a
    quote, a newline or an instruction inside stays inside the quotes."""
    return json.dumps(value, ensure_ascii=False)


__all__ = ["Prompt", "load_prompt", "packaged_prompts", "prompts_root", "quoted"]
