"""The HTTP API under ``/api``: search (text, image, composed), feedback sessions, dialogues, and
items (caption, thumbnail, image) by id. Each route checks the server's limits, then hands the
work to the pipeline, :class:`..agent.session.Session` or :class:`..agent.dialogue.DialogueSession`
on a worker; nothing here searches, rewrites or asks by itself."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, File, Form, UploadFile
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, Response

from ..agent.dialogue import MAX_ROUNDS, DialogueSession
from ..agent.session import Session
from ..store.search import QueryError, SearchResult
from .errors import NotFoundError
from .indexes import Replica
from .results import RenderedJSON, moved, render, result_json
from .schemas import (
    MAX_K,
    AnswerOut,
    AnswerRequest,
    CaptionOut,
    DialogueOut,
    DialogueStateOut,
    FeedbackOut,
    FeedbackRequest,
    HealthOut,
    IndexOut,
    ResultOut,
    SearchRequest,
    SessionOut,
    SessionStateOut,
)
from .server import Server
from .uploads import read_upload, save_upload

ItemId = Annotated[int, PathParam(ge=0, le=2**63 - 1, description="The item's id in the index.")]
SessionId = Annotated[str, PathParam(min_length=1, max_length=64)]
CACHED = {"Cache-Control": "private, max-age=3600"}
JPEG = {200: {"content": {"image/jpeg": {}}, "description": "A JPEG."}}
IMAGE = {200: {"content": {"image/*": {}}, "description": "The item's image file."}}


def _rounds(name: str, results: list[SearchResult]) -> list[dict[str, Any]]:
    return [{"round": i, "query": r.query, "result": result_json(name, r, i)} for i, r in enumerate(results)]


def _next_question(dialogue: DialogueSession) -> str | None:
    """The dialogue's next question, or None once its rounds are used up."""
    return dialogue.ask() if dialogue.round + 1 < dialogue.max_rounds else None


def api_router(server: Server) -> APIRouter:
    router = APIRouter(prefix="/api")
    settings = server.settings

    async def uploaded(file: UploadFile) -> bytes:
        return await read_upload(file, settings.max_upload_bytes, settings.max_image_pixels)

    # ------------------------------------------------------------------ indexes
    @router.get("/health", response_model=HealthOut, tags=["server"])
    async def health() -> dict[str, Any]:
        """Whether the server answers (no token needed)."""
        return {"status": "ok", "indexes": sorted(server.served)}

    @router.get("/indexes", response_model=list[IndexOut], tags=["indexes"])
    def indexes() -> list[dict[str, Any]]:
        """The served indexes: size, preset, stages, and what they can do."""
        return [served.describe() for served in server.served.values()]

    @router.get("/indexes/{name}", response_model=IndexOut, tags=["indexes"])
    def index(name: str) -> dict[str, Any]:
        return server.index(name).describe()

    # ------------------------------------------------------------------ search
    @router.post("/indexes/{name}/search", response_model=ResultOut, tags=["search"])
    async def search(name: str, body: SearchRequest) -> Response:
        """Search with words."""
        served = server.index(name)
        text, k = server.check_text(body.text), server.check_k(body.k)

        def job(replica: Replica) -> bytes:
            result = replica.pipeline.search(text, k=k)
            server.observe(served, result)
            return render(result_json(name, result, 0))

        return RenderedJSON(await server.model_work(served, job))

    @router.post("/indexes/{name}/search/image", response_model=ResultOut, tags=["search"])
    async def search_image(
        name: str,
        file: Annotated[UploadFile, File(description="The query (or reference) image.")],
        edit: Annotated[str | None, Form(description="An edit in words: a composed query.")] = None,
        k: Annotated[int, Form(ge=1, le=MAX_K)] = 10,
    ) -> Response:
        """Search with an image, or with a reference image and an edit (a composed query)."""
        served = server.index(name)
        edit, k = server.check_edit(edit), server.check_k(k)
        data = await uploaded(file)

        def job(replica: Replica) -> bytes:
            path = save_upload(data, server.uploads)
            try:
                result = replica.pipeline.search(image=path, edit=edit, k=k)
            finally:
                path.unlink(missing_ok=True)
            server.observe(served, result)
            return render(result_json(name, result, 0))

        return RenderedJSON(await server.model_work(served, job))

    # ------------------------------------------------------------------ feedback sessions
    async def start_session(name: str, k: int, text: str | None, data: bytes | None, edit: str | None) -> Response:
        served = server.index(name)
        server.sessions.check_room()

        def job(replica: Replica) -> bytes:
            session = Session(replica.pipeline, k=k, max_rounds=settings.max_rounds)
            path = None if data is None else save_upload(data, server.uploads)
            try:
                result = session.search(text, image=path, edit=edit)
                live = server.sessions.add("session", name, session, replica, path)
            except BaseException:
                if path is not None:
                    path.unlink(missing_ok=True)
                raise
            server.observe(served, result)
            return render({"session": live.id, "round": 0, "result": result_json(name, result, 0)})

        return RenderedJSON(await server.model_work(served, job))

    @router.post("/indexes/{name}/sessions", response_model=SessionOut, tags=["feedback sessions"])
    async def new_session(name: str, body: SearchRequest) -> Response:
        """Round 0 of a feedback session: search with words; mark hits, then ``.../feedback``."""
        return await start_session(name, server.check_k(body.k), server.check_text(body.text), None, None)

    @router.post("/indexes/{name}/sessions/image", response_model=SessionOut, tags=["feedback sessions"])
    async def new_image_session(
        name: str,
        file: Annotated[UploadFile, File(description="The query (or reference) image.")],
        edit: Annotated[str | None, Form(description="An edit in words: a composed query.")] = None,
        k: Annotated[int, Form(ge=1, le=MAX_K)] = 10,
    ) -> Response:
        """Round 0 of a feedback session that starts from an image (with an optional edit)."""
        server.index(name)
        edit, k = server.check_edit(edit), server.check_k(k)
        return await start_session(name, k, None, await uploaded(file), edit)

    @router.post("/indexes/{name}/sessions/{sid}/feedback", response_model=FeedbackOut, tags=["feedback sessions"])
    async def feedback(name: str, sid: SessionId, body: FeedbackRequest) -> Response:
        """Mark hits of the last round relevant or not; the next round runs (the query rewritten
        from the marks, where the pipeline has a stage that reads them)."""
        served = server.index(name)
        live = server.sessions.get("session", name, sid)
        session: Session = live.agent
        server.check_marks(body.relevant, body.irrelevant)

        def job(_: Replica) -> bytes:
            before = session.results[-1]
            after = session.feedback(body.relevant, body.irrelevant)
            server.observe(served, after)
            return render({
                "session": sid,
                "round": session.round,
                "query": after.query,
                "result": result_json(name, after, session.round),
                "moved": moved(before, after),
            })  # fmt: skip

        return RenderedJSON(await server.model_work(served, job, live.replica))

    @router.get("/indexes/{name}/sessions/{sid}", response_model=SessionStateOut, tags=["feedback sessions"])
    def session_state(name: str, sid: SessionId) -> Response:
        """Every round so far, with the marks given (what a page reloads from)."""
        session: Session = server.sessions.get("session", name, sid).agent
        marks = session.state.feedback if session.state is not None else []
        return RenderedJSON(render({
            "session": sid,
            "round": session.round,
            "k": session.k,
            "max_rounds": session.max_rounds,
            "rounds": _rounds(name, list(session.results)),
            "feedback": [{"round": f.round, "relevant": f.relevant, "irrelevant": f.irrelevant} for f in marks],
        }))  # fmt: skip

    @router.delete("/indexes/{name}/sessions/{sid}", status_code=204, tags=["feedback sessions"])
    async def end_session(name: str, sid: SessionId) -> Response:
        """Forget a session (and its uploaded image) now."""
        server.sessions.remove("session", name, sid)
        return Response(status_code=204)

    # ------------------------------------------------------------------ dialogues
    @router.post("/indexes/{name}/dialogues", response_model=DialogueOut, tags=["dialogues"])
    async def new_dialogue(name: str, body: SearchRequest) -> Response:
        """Round 0 of a dialogue: a first description; the answer holds the system's first question."""
        served = server.index(name)
        text, k = server.check_text(body.text), server.check_k(body.k)
        server.sessions.check_room()

        def job(replica: Replica) -> bytes:
            # As `viewfinder chat` does: questions from the hits' captions, the query from the answers.
            dialogue = DialogueSession(
                replica.pipeline, "grounded", "rule", k=k, max_rounds=min(settings.max_rounds, MAX_ROUNDS)
            )  # fmt: skip
            result = dialogue.search(text)
            question = _next_question(dialogue)
            live = server.sessions.add("dialogue", name, dialogue, replica)
            server.observe(served, result)
            return render(
                {"dialogue": live.id, "round": 0, "question": question, "result": result_json(name, result, 0)}
            )

        return RenderedJSON(await server.model_work(served, job))

    @router.post("/indexes/{name}/dialogues/{did}/answer", response_model=AnswerOut, tags=["dialogues"])
    async def answer(name: str, did: SessionId, body: AnswerRequest) -> Response:
        """Answer the pending question; the next round searches with the reformulated query."""
        served = server.index(name)
        live = server.sessions.get("dialogue", name, did)
        dialogue: DialogueSession = live.agent
        text = server.check_text(body.answer, "answer")

        def job(_: Replica) -> bytes:
            if dialogue.pending is None:
                raise QueryError(f"this dialogue has no question pending: it has run its {dialogue.max_rounds} rounds")
            result = dialogue.answer(text)
            question = _next_question(dialogue)
            server.observe(served, result)
            return render({
                "dialogue": did,
                "round": dialogue.round,
                "query": result.query,
                "unchanged": dialogue.unchanged,
                "question": question,
                "result": result_json(name, result, dialogue.round),
            })  # fmt: skip

        return RenderedJSON(await server.model_work(served, job, live.replica))

    @router.get("/indexes/{name}/dialogues/{did}", response_model=DialogueStateOut, tags=["dialogues"])
    def dialogue_state(name: str, did: SessionId) -> Response:
        """The questions and answers so far, every round, and the pending question."""
        dialogue: DialogueSession = server.sessions.get("dialogue", name, did).agent
        return RenderedJSON(render({
            "dialogue": did,
            "round": dialogue.round,
            "k": dialogue.k,
            "max_rounds": dialogue.max_rounds,
            "question": dialogue.pending,
            "turns": [{"question": t.question, "answer": t.answer} for t in dialogue.turns],
            "rounds": _rounds(name, list(dialogue.results)),
        }))  # fmt: skip

    @router.delete("/indexes/{name}/dialogues/{did}", status_code=204, tags=["dialogues"])
    async def end_dialogue(name: str, did: SessionId) -> Response:
        server.sessions.remove("dialogue", name, did)
        return Response(status_code=204)

    # ------------------------------------------------------------------ items, by id only
    @router.get("/indexes/{name}/items/{item_id}/caption", response_model=CaptionOut, tags=["items"])
    async def caption(name: str, item_id: ItemId) -> dict[str, Any]:
        """A description of the item: the pipeline's captioner (through its cache), else the item's own text."""
        served = server.index(name)
        row = served.item(item_id)
        if served.captioner is not None:
            text, source = await server.model_work(served, lambda replica: served.caption(row, replica))
        else:
            text, source = served.caption(row)  # no model: the item's text, if it has one
        if text is None:
            raise NotFoundError(f"item {item_id} has no caption: the index's pipeline captions nothing, "
                                "and the collection gave it no text")  # fmt: skip
        return {"id": item_id, "caption": text, "source": source}

    @router.get("/indexes/{name}/items/{item_id}/thumbnail", response_class=Response, responses=JPEG, tags=["items"])
    def thumbnail(name: str, item_id: ItemId) -> Response:
        """A small JPEG of the item's image (at most ``thumbnail_px`` on its longer side)."""
        served = server.index(name)
        data = server.thumbnails.get(served, served.item(item_id))
        return Response(data, media_type="image/jpeg", headers=CACHED)

    @router.get("/indexes/{name}/items/{item_id}/image", response_class=FileResponse, responses=IMAGE, tags=["items"])
    def image(name: str, item_id: ItemId) -> FileResponse:
        """The item's image file as it is in the collection."""
        served = server.index(name)
        return FileResponse(served.media_path(served.item(item_id)), headers=CACHED)

    return router
