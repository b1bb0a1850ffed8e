"""The server's limits and pool sizes: one typed config, checked when it is made."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ServeSettings:
    """What one server accepts and how much model work it runs at once."""

    workers: int = 2
    """Copies of each index's pipeline, each on its own thread, running model work (searches, rounds,
    captions) side by side; a copy runs one query at a time (its models, caches and store connection
    are its own). Memory grows with each copy."""
    queue: int = 64
    """Model jobs that may wait beyond one per thread; one more is refused at once with 503 and Retry-After."""
    max_upload_bytes: int = 10 * 1024 * 1024
    """Largest request body an image upload may have (413 beyond)."""
    max_image_pixels: int = 40_000_000
    """Largest uploaded image, in pixels (a decompression bomb is refused with 413 before decoding)."""
    max_query_chars: int = 1000
    """Longest text query (and dialogue answer) accepted (422 beyond)."""
    max_edit_chars: int = 500
    """Longest edit of a composed query."""
    max_k: int = 100
    """Most hits one request may ask for."""
    max_rounds: int = 10
    """Rounds of one feedback session or dialogue, round 0 included."""
    max_sessions: int = 64
    """Live sessions and dialogues together; idle ones expire first, then a new one gets 429."""
    session_idle_s: float = 1800.0
    """A session unused this long is forgotten (with its uploaded image)."""
    max_marks: int = 200
    """Most item ids one feedback request may mark."""
    thumbnail_px: int = 256
    """Longest side of a thumbnail."""
    thumbnail_cache: int = 2048
    """Thumbnails kept in memory (least recently used dropped first)."""

    def __post_init__(self) -> None:
        for name in (
            "workers", "max_upload_bytes", "max_image_pixels", "max_query_chars", "max_edit_chars", "max_k",
            "max_rounds", "max_sessions", "max_marks", "thumbnail_px",
        ):  # fmt: skip
            if getattr(self, name) < 1:
                raise ValueError(f"ServeSettings.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("queue", "thumbnail_cache"):
            if getattr(self, name) < 0:
                raise ValueError(f"ServeSettings.{name} must be >= 0, got {getattr(self, name)}")
        if self.session_idle_s <= 0:
            raise ValueError(f"ServeSettings.session_idle_s must be > 0, got {self.session_idle_s}")
