"""Decoding options of the captioners: one set of checks for every captioner family.

A captioner's ``caption(pixels, **decoding)`` takes these options: greedy by default, beam search
(``num_beams``), or sampling (``do_sample`` with ``temperature``, ``top_p``, ``top_k``; ``seed``
makes a draw repeatable); ``max_new_tokens`` / ``min_new_tokens`` bound the length;
``repetition_penalty`` and ``length_penalty`` as in transformers' ``generate``; ``prompt`` (for
the families that take one) is text the caption continues. Anything else is a :class:`ConfigError`
that names the option and the rule it breaks.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from .entries import ConfigError

DECODING_OPTIONS: tuple[str, ...] = (
    "max_new_tokens",
    "min_new_tokens",
    "num_beams",
    "do_sample",
    "temperature",
    "top_p",
    "top_k",
    "repetition_penalty",
    "length_penalty",
    "prompt",
    "seed",
)
"""Every decoding option a captioner may take (``prompt`` only where the family takes one)."""

SAMPLING_ONLY: tuple[str, ...] = ("temperature", "top_p", "top_k")
"""Options that mean something only when sampling (``do_sample=True``)."""

_RULES: dict[str, tuple[type, Callable[[Any], bool], str]] = {
    "max_new_tokens": (int, lambda v: v >= 1, "an integer >= 1"),
    "min_new_tokens": (int, lambda v: v >= 0, "an integer >= 0"),
    "num_beams": (int, lambda v: v >= 1, "an integer >= 1"),
    "do_sample": (bool, lambda v: True, "true or false"),
    "temperature": (float, lambda v: v > 0, "a number > 0"),
    "top_p": (float, lambda v: 0 < v <= 1, "a number in (0, 1]"),
    "top_k": (int, lambda v: v >= 0, "an integer >= 0"),
    "repetition_penalty": (float, lambda v: v > 0, "a number > 0"),
    "length_penalty": (float, lambda v: True, "a number"),
    "prompt": (str, lambda v: True, "a string"),
    "seed": (int, lambda v: v >= 0, "an integer >= 0"),
}


def _right_type(kind: type, value: Any) -> bool:
    if kind is bool:
        return isinstance(value, bool)
    if kind is str:
        return isinstance(value, str)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return kind is float or isinstance(value, int)


def check_decoding(
    options: Mapping[str, Any], defaults: Mapping[str, Any] | None = None, *, takes_prompt: bool = True
) -> dict[str, Any]:
    """``options`` (None values left out) over ``defaults``, checked; a :class:`ConfigError` says which
    option is wrong and why. ``takes_prompt``: whether the captioner continues a ``prompt``."""
    known = DECODING_OPTIONS if takes_prompt else tuple(o for o in DECODING_OPTIONS if o != "prompt")
    unknown = sorted(set(options) - set(known))
    if unknown:
        hint = " (this captioner takes no prompt)" if "prompt" in unknown and not takes_prompt else ""
        raise ConfigError(f"unknown decoding option(s) {unknown}{hint}; known: {list(known)}")
    opts = {**(defaults or {}), **{k: v for k, v in options.items() if v is not None}}
    for key, value in opts.items():
        kind, ok, rule = _RULES[key]
        if not _right_type(kind, value) or not ok(value):
            raise ConfigError(f"decoding option {key!r} must be {rule}, got {value!r}")
    if not opts.get("do_sample"):
        given = [k for k in SAMPLING_ONLY if k in opts]
        if given:
            raise ConfigError(f"decoding option(s) {given} apply only when sampling: add do_sample=True")
    elif opts.get("num_beams", 1) > 1:
        raise ConfigError("decoding: choose beam search (num_beams > 1) or sampling (do_sample=True), not both")
    if "max_new_tokens" in opts and opts.get("min_new_tokens", 0) > opts["max_new_tokens"]:
        raise ConfigError("decoding option 'min_new_tokens' must not exceed 'max_new_tokens'")
    return opts


__all__ = ["DECODING_OPTIONS", "SAMPLING_ONLY", "check_decoding"]
