"""The HTTP API and the web page (``viewfinder serve``): search, feedback sessions and dialogues over
served indexes, built on the pipeline, :class:`..agent.session.Session` and
:class:`..agent.dialogue.DialogueSession`. Build an app in-process with :func:`create_app`."""

from __future__ import annotations

from .app import create_app
from .settings import ServeSettings

__all__ = ["ServeSettings", "create_app"]
