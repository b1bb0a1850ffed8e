"""Model-family adapters behind small protocols (see :mod:`viewfinder.adapters.base`)."""

from .base import ImageTextEncoder

__all__ = ["ImageTextEncoder"]
