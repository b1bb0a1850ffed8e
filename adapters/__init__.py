"""Model-family adapters behind small protocols (see :mod:`viewfinder.adapters.base`)."""

from viewfinder.adapters.base import ImageTextEncoder

__all__ = ["ImageTextEncoder"]
