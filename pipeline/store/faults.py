"""Fault injection for the store's tests: named points in a commit where a test can kill the process
or make a file operation fail, the way a power cut or a full disk would.

``VIEWFINDER_FAULT=KIND:POINT`` (KIND ``crash``: SIGKILL this process; ``enospc`` / ``eio``: raise the
``OSError`` a full disk or a failing device gives) fires when the store reaches POINT. Unset (always,
outside tests) every point is one dictionary lookup. :data:`POINTS` lists them in commit order.
"""

from __future__ import annotations

import errno
import os
import signal

ENV = "VIEWFINDER_FAULT"

POINTS = (
    "pending-written",  # a batch of embeddings checkpointed, its SQLite transaction not yet committed
    "faiss-written",  # the next generation's FAISS file written aside, not yet fsynced
    "faiss-fsynced",  # ... fsynced, not yet renamed into place
    "faiss-renamed",  # ... renamed into place (the generation is still not committed)
    "npy-renamed",  # the re-scoring vectors of an ``,Rfp16`` index renamed into place
    "sqlite-in-transaction",  # rows moved inside the commit's SQLite transaction, before COMMIT
    "sqlite-committed",  # the commit point passed; manifest.json not yet rewritten
    "json-renamed",  # manifest.json rewritten (first where a writer opens the index, again after a commit)
)

_ERRNO = {"enospc": errno.ENOSPC, "eio": errno.EIO}


def fault_point(name: str) -> None:
    """Fire the fault ``VIEWFINDER_FAULT`` names, when it names this point."""
    spec = os.environ.get(ENV)
    if not spec:
        return
    kind, _, point = spec.partition(":")
    if point != name:
        return
    if kind == "crash":
        os.kill(os.getpid(), signal.SIGKILL)
    if kind in _ERRNO:
        code = _ERRNO[kind]
        raise OSError(code, os.strerror(code))
