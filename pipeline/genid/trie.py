"""A prefix tree over the token sequences of a collection's identifiers, for constrained decoding:
at every step the model may only emit a token that continues some identifier, and an identifier
ends with the end token, so every finished output is an identifier of the collection (even where
one identifier is a prefix of another: "41" and "417")."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any


class IdTrie:
    """Token-id prefix tree; each identifier's sequence ends with ``end_token``."""

    def __init__(self, sequences: Iterable[Sequence[int]], end_token: int) -> None:
        self.end_token = end_token
        self.root: dict[int, Any] = {}
        self.size = 0
        for seq in sequences:
            node = self.root
            for token in [*seq, end_token]:
                node = node.setdefault(int(token), {})
            self.size += 1
        if not self.size:
            raise ValueError("no identifiers: the collection is empty")

    def allowed(self, prefix: Sequence[int]) -> list[int]:
        """Tokens that may follow ``prefix`` (after the end token: only the end token again, so a
        finished beam stays finished; an invalid prefix: none)."""
        node = self.root
        for token in prefix:
            if not node:  # past the end token: a finished beam
                return [self.end_token]
            node = node.get(int(token))
            if node is None:
                return []
        return list(node) if node else [self.end_token]

    def contains(self, sequence: Sequence[int]) -> bool:
        node = self.root
        for token in [*sequence, self.end_token]:
            node = node.get(int(token))
            if node is None:
                return False
        return not node

    @classmethod
    def from_identifiers(cls, identifiers: Iterable[str], tokenizer: Any) -> tuple[IdTrie, dict[tuple[int, ...], str]]:
        """The trie of ``identifiers`` as ``tokenizer`` writes them, and token sequence -> identifier."""
        by_tokens: dict[tuple[int, ...], str] = {}
        for identifier in identifiers:
            tokens = tuple(tokenizer(identifier, add_special_tokens=False)["input_ids"])
            if tokens in by_tokens:
                raise ValueError(f"identifiers {by_tokens[tokens]!r} and {identifier!r} tokenize the same")
            by_tokens[tokens] = identifier
        return cls(by_tokens, tokenizer.eos_token_id), by_tokens

    def prefix_fn(self, prompt_length: int) -> Callable[[int, Any], list[int]]:
        """A ``prefix_allowed_tokens_fn`` for ``generate`` with prompts padded to ``prompt_length``."""

        def allowed(_batch_id: int, input_ids: Any) -> list[int]:
            return self.allowed(input_ids[prompt_length:].tolist())

        return allowed


__all__ = ["IdTrie"]
