"""The API's request and response bodies (what ``/openapi.json`` describes). The server's own limits
(``ServeSettings``) are checked in the routes; the bounds here are the hard ones of any server."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ..store.search import MAX_QUERY_CHARS

MAX_K = 1000
MAX_IDS = 1000


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ---------------------------------------------------------------------------------------- requests
class SearchRequest(Strict):
    text: str = Field(min_length=1, max_length=MAX_QUERY_CHARS, description="What the picture shows, in words.")
    k: int = Field(10, ge=1, le=MAX_K, description="Hits wanted.")


class FeedbackRequest(Strict):
    relevant: list[int] = Field(default_factory=list, max_length=MAX_IDS, description="Item ids of hits that fit.")
    irrelevant: list[int] = Field(default_factory=list, max_length=MAX_IDS, description="Item ids that do not.")


class AnswerRequest(Strict):
    answer: str = Field(min_length=1, max_length=MAX_QUERY_CHARS, description="The answer to the pending question.")


# ---------------------------------------------------------------------------------------- responses
class HitOut(BaseModel):
    rank: int
    id: int
    key: str
    score: float
    scores: dict[str, float] = Field(description="The score each stage gave.")
    caption: str | None = Field(description="A generated description (when the pipeline captions its hits).")
    text: str | None = Field(description="The item's own text from the collection (a manifest caption).")
    thumbnail: str
    image: str


class ResultOut(BaseModel):
    query: str | None = Field(description="The query as searched (rewritten, composed); null for an image query.")
    hits: list[HitOut]
    trace: dict[str, Any] | None = Field(description="What each stage did: query in and out, candidates, notes.")
    timings: dict[str, float] = Field(description="Seconds per stage.")
    truncated: bool = False
    round: int


class IndexOut(BaseModel):
    name: str
    count: int
    generation: int
    modality: str
    preset: str
    stages: list[str]
    composes: bool = Field(description="Takes a reference image with an edit (composed search).")
    reads_feedback: bool = Field(description="A stage rewrites the query from the marks of a feedback round.")
    dialogue: bool
    captions: bool = Field(description="A stage captions the hits (and GET .../caption asks it).")


class HealthOut(BaseModel):
    status: str
    indexes: list[str]


class SessionOut(BaseModel):
    session: str
    round: int
    result: ResultOut


class MoveOut(BaseModel):
    id: int
    before: int | None
    after: int | None


class FeedbackOut(BaseModel):
    session: str
    round: int
    query: str | None = Field(description="The query this round searched with (rewritten from the marks).")
    result: ResultOut
    moved: list[MoveOut]


class RoundOut(BaseModel):
    round: int
    query: str | None
    result: ResultOut


class MarksOut(BaseModel):
    round: int
    relevant: list[int]
    irrelevant: list[int]


class SessionStateOut(BaseModel):
    session: str
    round: int
    k: int
    max_rounds: int
    rounds: list[RoundOut]
    feedback: list[MarksOut]


class DialogueOut(BaseModel):
    dialogue: str
    round: int
    question: str | None = Field(description="The next question (null when the dialogue has no rounds left).")
    result: ResultOut


class AnswerOut(DialogueOut):
    query: str | None = Field(description="The query reformulated from the dialogue so far.")
    unchanged: str | None = Field(
        None, description="Why the answer changed nothing (\"'I don't know' says nothing about the picture\"), or null."
    )


class TurnOut(BaseModel):
    question: str
    answer: str


class DialogueStateOut(BaseModel):
    dialogue: str
    round: int
    k: int
    max_rounds: int
    question: str | None
    turns: list[TurnOut]
    rounds: list[RoundOut]


class CaptionOut(BaseModel):
    id: int
    caption: str
    source: str = Field(
        description="'captioner' (the pipeline's, through its cache) or 'collection' (the item's text)."
    )
