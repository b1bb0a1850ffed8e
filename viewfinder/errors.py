"""The one base of every error a user of viewfinder can meet.

Every error raised for bad input, a bad config, a missing model or file, or an index that cannot be
used as asked derives from :class:`Error`, and its message says what is wrong and what to do, in
library terms. Catch :class:`Error` to handle them all; anything else is a bug and keeps its
traceback. Subclasses also derive from the built-in class that fits (``ValueError``,
``RuntimeError``), so code that caught those before keeps working.
"""

from __future__ import annotations


class Error(Exception):
    """Base of every error viewfinder raises for something a user can fix."""
