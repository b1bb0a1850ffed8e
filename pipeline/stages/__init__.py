"""The stages of a query, one module each, and the seam they share.

* :mod:`.state` — :class:`QueryState`, the object every stage takes and returns.
* :mod:`.base` — the :class:`Stage` protocol and the :class:`StageContext` builders draw on.
* :mod:`.registry` — stage names a preset may use, their typed configs and builders.
* :mod:`.preselect` — dual encoder + FAISS: the first stage.
* :mod:`.trace` — what each stage did, as JSON.
* :mod:`.runner` — :class:`Pipeline`, which runs a preset's stages.
"""

from .base import Stage, StageContext
from .preselect import Preselect, PreselectConfig
from .registry import STAGE_TYPES, StageSpec, register_stage
from .state import Candidate, Feedback, QueryState
from .trace import StageRecord, Trace

__all__ = [
    "STAGE_TYPES",
    "Candidate",
    "Feedback",
    "Preselect",
    "PreselectConfig",
    "QueryState",
    "Stage",
    "StageContext",
    "StageRecord",
    "StageSpec",
    "Trace",
    "register_stage",
]
