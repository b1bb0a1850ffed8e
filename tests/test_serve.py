"""The HTTP API (``viewfinder serve``) with FastAPI's test client on a tiny scene index and tiny models:
text, image and composed search, feedback rounds, dialogues, captions, thumbnails, metrics, the
limits, an index updated while the app serves, and overload answered with 503."""

from __future__ import annotations

import asyncio
import io
import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from fastapi.testclient import TestClient
from helpers import tiny_scene_index, write_fake_chat, write_images
from PIL import Image

from viewfinder.pipeline import build_index
from viewfinder.pipeline.serve import ServeSettings, create_app

REWRITTEN = "a large red star at the top"
"""What the fake chat model answers, to the compose and the rewrite stage alike."""


def build_serve_collection(root: Path, encoder: Any) -> Path:
    """A 14-scene index (tiny preset) in ``root/index``, a tiny captioner and a fake chat model, and
    ``root/agent.yaml``: compose, rewrite, preselect all 14, caption the top 5."""
    from viewfinder.adapters.qformer_captioner import CaptionerArch, CaptionerHeads, CaptionVocab, save_captioner_dir

    tiny_scene_index(root, seed=5, n_test=14)
    arch = CaptionerArch(
        qformer_hidden=32, qformer_layers=1, qformer_heads=2, qformer_intermediate=64, num_query_tokens=4,
        lm_hidden=32, lm_layers=1, lm_heads=2, max_caption_tokens=12, dropout=0.0,
    )  # fmt: skip
    torch.manual_seed(0)
    vocab = CaptionVocab.build(["a red circle on the left", "a large blue square at the top"])
    heads = CaptionerHeads(arch, int(encoder.model.visual.transformer.width), vocab)
    save_captioner_dir(heads, vocab, root / "captioner", encoder_entry="tiny-test")
    (root / "captioner.yaml").write_text("family: qformer_clip_captioner\nweights: local-dir\npath: captioner\n")
    write_fake_chat(root / "llm.yaml", REWRITTEN)
    (root / "agent.yaml").write_text(
        "encoder: tiny-test\nindex: {num_workers: 0}\nstages:\n"
        "  - compose: {model: llm.yaml, captioner: captioner.yaml, max_new_tokens: 6}\n"
        "  - rewrite: {model: llm.yaml}\n"
        "  - preselect: {k: 14}\n"
        "  - caption: {model: captioner.yaml, k: 5, max_new_tokens: 6}\n"
    )
    return root


@pytest.fixture(scope="module")
def collection(tmp_path_factory, tiny_encoder) -> Path:
    return build_serve_collection(tmp_path_factory.mktemp("serve"), tiny_encoder)


@pytest.fixture(scope="module")
def client(collection):
    app = create_app({"scenes": collection / "index"}, preset=str(collection / "agent.yaml"))
    with TestClient(app) as client:
        yield client


def _item_image(collection: Path, client: TestClient, item_id: int) -> bytes:
    return client.get(f"/api/indexes/scenes/items/{item_id}/image").content


# ---------------------------------------------------------------------------------------- basics
def test_health_indexes_page_and_schema(client):
    assert client.get("/api/health").json() == {"status": "ok", "indexes": ["scenes"]}
    (info,) = client.get("/api/indexes").json()
    assert info["name"] == "scenes" and info["count"] >= 14 and info["preset"] == "agent"
    assert info["stages"] == ["compose", "rewrite", "preselect", "caption"]
    assert info["composes"] and info["reads_feedback"] and info["dialogue"] and info["captions"]
    assert client.get("/api/indexes/scenes").json() == info
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    schema = client.get("/openapi.json").json()
    for path in (
        "/api/indexes/{name}/search", "/api/indexes/{name}/search/image", "/api/indexes/{name}/sessions",
        "/api/indexes/{name}/sessions/{sid}/feedback", "/api/indexes/{name}/dialogues/{did}/answer",
        "/api/indexes/{name}/items/{item_id}/thumbnail", "/metrics",
    ):  # fmt: skip
        assert path in schema["paths"], path
    assert client.get("/docs").status_code == 200


def test_text_search_returns_hits_with_scores_captions_links_and_the_trace(client):
    r = client.post("/api/indexes/scenes/search", json={"text": "a red star", "k": 6})
    assert r.status_code == 200, r.text
    result = r.json()
    assert result["query"] == "a red star" and result["round"] == 0 and len(result["hits"]) == 6
    hit = result["hits"][0]
    assert hit["rank"] == 1 and set(hit["scores"]) == {"preselect"}
    assert hit["thumbnail"] == f"/api/indexes/scenes/items/{hit['id']}/thumbnail"
    assert hit["image"] == f"/api/indexes/scenes/items/{hit['id']}/image"
    assert all(isinstance(h["caption"], str) for h in result["hits"][:5]) and result["hits"][5]["caption"] is None
    assert [s["stage"] for s in result["trace"]["steps"]] == ["compose", "rewrite", "preselect", "caption"]
    assert set(result["timings"]) == {"compose", "rewrite", "preselect", "caption"}


def test_image_search_finds_the_image_itself_and_a_composed_query_applies_the_edit(client, collection):
    first = client.post("/api/indexes/scenes/search", json={"text": "a shape", "k": 3}).json()["hits"][0]
    picture = _item_image(collection, client, first["id"])
    r = client.post(
        "/api/indexes/scenes/search/image", files={"file": ("q.png", picture, "image/png")}, data={"k": "3"}
    )
    assert r.status_code == 200, r.text
    result = r.json()
    assert result["query"] is None and result["hits"][0]["id"] == first["id"]
    assert result["trace"]["image"] == "(uploaded image)"  # never the server's path of the upload
    composed = client.post(
        "/api/indexes/scenes/search/image",
        files={"file": ("q.png", picture, "image/png")},
        data={"edit": "make the star red", "k": "4"},
    )
    assert composed.status_code == 200, composed.text
    assert composed.json()["query"] == REWRITTEN and len(composed.json()["hits"]) == 4
    assert composed.json()["trace"]["steps"][0]["notes"]["fallback"] is False


# ---------------------------------------------------------------------------------------- rounds
def test_a_feedback_round_rewrites_the_query_and_moves_the_hits(client):
    start = client.post("/api/indexes/scenes/sessions", json={"text": "a star", "k": 5})
    assert start.status_code == 200, start.text
    sid, hits = start.json()["session"], start.json()["result"]["hits"]
    assert start.json()["round"] == 0
    liked, disliked = hits[0]["id"], hits[1]["id"]
    r = client.post(
        f"/api/indexes/scenes/sessions/{sid}/feedback", json={"relevant": [liked], "irrelevant": [disliked]}
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["round"] == 1 and body["query"] == REWRITTEN and body["result"]["query"] == REWRITTEN
    moves = {m["id"]: m for m in body["moved"]}
    assert moves[disliked] == {"id": disliked, "before": 2, "after": None}  # left out after being rejected
    assert [h["id"] for h in body["result"]["hits"]] != [h["id"] for h in hits]
    notes = body["result"]["trace"]["steps"][1]["notes"]
    assert notes["fallback"] is False and notes["feedback_round"] == 0
    state = client.get(f"/api/indexes/scenes/sessions/{sid}").json()  # what a reloaded page reads
    assert state["round"] == 1 and [r["query"] for r in state["rounds"]] == ["a star", REWRITTEN]
    assert state["feedback"] == [{"round": 0, "relevant": [liked], "irrelevant": [disliked]}]
    assert client.delete(f"/api/indexes/scenes/sessions/{sid}").status_code == 204
    assert client.get(f"/api/indexes/scenes/sessions/{sid}").status_code == 404


def test_a_session_can_start_from_an_image(client, collection):
    first = client.post("/api/indexes/scenes/search", json={"text": "a shape", "k": 2}).json()["hits"][0]
    files = {"file": ("q.png", _item_image(collection, client, first["id"]), "image/png")}
    r = client.post("/api/indexes/scenes/sessions/image", files=files, data={"k": "4"})
    assert r.status_code == 200, r.text
    sid = r.json()["session"]
    hits = r.json()["result"]["hits"]
    again = client.post(f"/api/indexes/scenes/sessions/{sid}/feedback", json={"relevant": [hits[0]["id"]]})
    assert again.status_code == 200, again.text  # the uploaded image lives as long as the session
    assert client.delete(f"/api/indexes/scenes/sessions/{sid}").status_code == 204


def test_feedback_errors_are_4xx(client):
    sid = client.post("/api/indexes/scenes/sessions", json={"text": "a star", "k": 3}).json()["session"]
    unknown = client.post(f"/api/indexes/scenes/sessions/{sid}/feedback", json={"relevant": [10**12]})
    assert unknown.status_code == 400 and "not among the last round" in unknown.json()["detail"]
    assert client.post("/api/indexes/scenes/sessions/nope/feedback", json={}).status_code == 404
    assert client.post(f"/api/indexes/other/sessions/{sid}/feedback", json={}).status_code == 404
    assert client.post(f"/api/indexes/scenes/sessions/{sid}/feedback", json={"relevant": ["x"]}).status_code == 422


def test_dialogue_rounds_ask_answer_and_reformulate(client):
    r = client.post("/api/indexes/scenes/dialogues", json={"text": "a star", "k": 5})
    assert r.status_code == 200, r.text
    did, question = r.json()["dialogue"], r.json()["question"]
    assert r.json()["round"] == 0 and question.endswith("?")  # about the hits' captions
    answered = client.post(f"/api/indexes/scenes/dialogues/{did}/answer", json={"answer": "a red one"})
    assert answered.status_code == 200, answered.text
    body = answered.json()
    assert body["round"] == 1 and body["query"] == "a red star" and body["question"].endswith("?")
    assert body["question"] != question and len(body["result"]["hits"]) == 5 and body["unchanged"] is None
    state = client.get(f"/api/indexes/scenes/dialogues/{did}").json()
    assert state["turns"] == [{"question": question, "answer": "a red one"}] and state["question"] == body["question"]
    assert [r["query"] for r in state["rounds"]] == ["a star", "a red star"]
    unsure = client.post(f"/api/indexes/scenes/dialogues/{did}/answer", json={"answer": "no idea"}).json()
    assert unsure["query"] == "a red star" and "says nothing" in unsure["unchanged"]
    empty = client.post(f"/api/indexes/scenes/dialogues/{did}/answer", json={"answer": " "})
    assert empty.status_code == 400 and "empty" in empty.json()["detail"]


def test_rounds_and_live_sessions_are_bounded(collection):
    settings = ServeSettings(max_rounds=2, max_sessions=2)
    app = create_app({"scenes": collection / "index"}, preset=str(collection / "agent.yaml"), settings=settings)
    with TestClient(app) as client:
        start = client.post("/api/indexes/scenes/sessions", json={"text": "a star", "k": 3}).json()
        sid, hit = start["session"], start["result"]["hits"][0]["id"]
        assert client.post(f"/api/indexes/scenes/sessions/{sid}/feedback", json={"relevant": [hit]}).status_code == 200
        over = client.post(f"/api/indexes/scenes/sessions/{sid}/feedback", json={"relevant": [hit]})
        assert over.status_code == 400 and "stops after 2 rounds" in over.json()["detail"]
        dialogue = client.post("/api/indexes/scenes/dialogues", json={"text": "a star"}).json()
        done = client.post(f"/api/indexes/scenes/dialogues/{dialogue['dialogue']}/answer", json={"answer": "red"})
        assert done.json()["question"] is None  # its last round
        full = client.post("/api/indexes/scenes/sessions", json={"text": "a star"})
        assert full.status_code == 429 and "Retry-After" in full.headers
        app.state.server.sessions.idle_s = 0.0  # every session is now idle too long: they expire
        time.sleep(0.01)
        assert client.post("/api/indexes/scenes/sessions", json={"text": "a star"}).status_code == 200
        assert client.get(f"/api/indexes/scenes/sessions/{sid}").status_code == 404


# ---------------------------------------------------------------------------------------- items
def test_captions_thumbnails_and_images_by_item_id(client, collection):
    hit = client.post("/api/indexes/scenes/search", json={"text": "a star", "k": 1}).json()["hits"][0]
    caption = client.get(f"/api/indexes/scenes/items/{hit['id']}/caption")
    assert caption.status_code == 200, caption.text
    assert caption.json() == {"id": hit["id"], "caption": hit["caption"], "source": "captioner"}  # the cached one
    thumb = client.get(hit["thumbnail"])
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
    assert max(Image.open(io.BytesIO(thumb.content)).size) <= ServeSettings().thumbnail_px
    assert client.get(hit["thumbnail"]).content == thumb.content  # from the cache
    image = client.get(hit["image"])
    assert image.status_code == 200 and Image.open(io.BytesIO(image.content)).size[0] > 0
    for kind in ("caption", "thumbnail", "image"):
        missing = client.get(f"/api/indexes/scenes/items/{10**9}/{kind}")
        assert missing.status_code == 404 and "no item" in missing.json()["detail"]
        assert client.get(f"/api/indexes/scenes/items/-1/{kind}").status_code == 422


def test_an_index_without_a_captioner_gives_the_collections_text(collection):
    with TestClient(create_app({"plain": collection / "index"}, preset="tiny")) as client:
        (info,) = client.get("/api/indexes").json()
        assert not info["captions"] and not info["composes"] and not info["reads_feedback"]
        hit = client.post("/api/indexes/plain/search", json={"text": "a star", "k": 1}).json()["hits"][0]
        caption = client.get(f"/api/indexes/plain/items/{hit['id']}/caption").json()
        assert caption == {"id": hit["id"], "caption": hit["text"], "source": "collection"}
        files = {"file": ("q.png", client.get(hit["image"]).content, "image/png")}
        edit = client.post("/api/indexes/plain/search/image", files=files, data={"edit": "make it blue"})
        assert edit.status_code == 400 and "no compose stage" in edit.json()["detail"]


# ---------------------------------------------------------------------------------------- errors, metrics
def test_user_errors_are_4xx_with_a_message(client):
    assert client.post("/api/indexes/nowhere/search", json={"text": "a star"}).status_code == 404
    assert client.post("/api/indexes/scenes/search", json={"text": ""}).status_code == 422
    assert client.post("/api/indexes/scenes/search", json={"text": "a star", "k": 0}).status_code == 422
    too_many = client.post("/api/indexes/scenes/search", json={"text": "a star", "k": 101})
    assert too_many.status_code == 422 and "at most 100" in too_many.json()["detail"]
    long = client.post("/api/indexes/scenes/search", json={"text": "x " * 600})
    assert long.status_code == 422 and "at most 1000" in long.json()["detail"]
    blank = client.post("/api/indexes/scenes/search", json={"text": "\u200b \t"})
    assert blank.status_code == 400 and blank.json()["error"] == "QueryError"
    assert client.post("/api/indexes/scenes/search", json={"text": "a", "extra": 1}).status_code == 422


def test_metrics_count_requests_by_route_and_time_each_stage(client):
    answer = client.post("/api/indexes/scenes/search", json={"text": "a star", "k": 2})
    assert answer.headers["server-timing"].startswith("app;dur=")
    client.post("/api/indexes/nowhere/search", json={"text": "a star"})
    text = client.get("/metrics").text
    assert 'viewfinder_requests_total{method="POST",route="/api/indexes/{name}/search",status="200"}' in text
    assert 'viewfinder_request_errors_total{route="/api/indexes/{name}/search",status="404"}' in text
    assert 'viewfinder_stage_seconds_count{index="scenes",stage="preselect"}' in text
    assert "viewfinder_queue_depth 0.0" in text and 'viewfinder_live_sessions{kind="session"}' in text


# ---------------------------------------------------------------------------------------- the index changes
def test_an_index_updated_while_serving_shows_the_new_items(tmp_path):
    write_images(tmp_path / "photos", 8, seed=1)
    build_index(tmp_path / "photos", tmp_path / "index", preset="tiny", progress=False)
    with TestClient(create_app({"photos": tmp_path / "index"})) as client:
        assert client.get("/api/indexes").json()[0]["count"] == 8
        before = {
            h["id"] for h in client.post("/api/indexes/photos/search", json={"text": "x", "k": 50}).json()["hits"]
        }
        assert len(before) == 8
        write_images(tmp_path / "photos", 6, seed=2, prefix="new")
        seen: list[int] = []
        failures: list[str] = []
        stop = threading.Event()

        def search_meanwhile() -> None:  # every answer is one whole generation: 8 items, or 14
            while not stop.is_set():
                r = client.post("/api/indexes/photos/search", json={"text": "x", "k": 50})
                if r.status_code != 200:
                    failures.append(r.text)
                else:
                    seen.append(len(r.json()["hits"]))

        reader = threading.Thread(target=search_meanwhile)
        reader.start()
        try:
            build_index(tmp_path / "photos", tmp_path / "index", preset="tiny", progress=False)
        finally:
            time.sleep(0.2)
            stop.set()
            reader.join()
        assert not failures and set(seen) <= {8, 14}
        assert client.get("/api/indexes").json()[0]["count"] == 14
        hits = client.post("/api/indexes/photos/search", json={"text": "x", "k": 50}).json()["hits"]
        new = {h["id"] for h in hits} - before
        assert len(new) == 6 and all(h["key"].startswith("new") for h in hits if h["id"] in new)
        assert all(client.get(f"/api/indexes/photos/items/{i}/thumbnail").status_code == 200 for i in new)


# ---------------------------------------------------------------------------------------- overload
class _Gate:
    """A stage that waits until released (a query that takes as long as the test wants)."""

    name = "gate"

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()

    def run(self, state):
        self.entered.set()
        self.release.wait(10)
        return state


def test_overload_answers_503_with_retry_after_at_once(collection):
    import httpx

    settings = ServeSettings(workers=1, queue=1)
    app = create_app({"scenes": collection / "index"}, preset="tiny", settings=settings)
    gate = _Gate()
    app.state.server.served["scenes"].pipeline.stages.insert(0, gate)

    async def scenario() -> tuple[list[int], float, httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            body = {"text": "a star", "k": 2}
            running = asyncio.create_task(client.post("/api/indexes/scenes/search", json=body))
            await asyncio.to_thread(gate.entered.wait, 10)
            waiting = asyncio.create_task(client.post("/api/indexes/scenes/search", json=body))
            while app.state.server.pool.pending < 2:
                await asyncio.sleep(0.005)
            start = time.perf_counter()
            refused = await client.post("/api/indexes/scenes/search", json=body)
            seconds = time.perf_counter() - start
            health = (await client.get("/api/health")).status_code  # not model work: still answered
            gate.release.set()
            done = await asyncio.gather(running, waiting)
            return [r.status_code for r in done] + [health], seconds, refused

    try:
        statuses, seconds, refused = asyncio.run(scenario())
    finally:
        gate.release.set()
        app.state.server.close()
    assert statuses == [200, 200, 200]
    assert refused.status_code == 503 and int(refused.headers["Retry-After"]) >= 1 and seconds < 0.5
    assert "busy" in refused.json()["detail"]


# ---------------------------------------------------------------------------------------- the load bench
@pytest.mark.slow
def test_bench_serve_loads_a_real_server_on_loopback(tmp_path):
    from typer.testing import CliRunner

    from viewfinder.pipeline.cli import app

    tiny_scene_index(tmp_path, seed=2, n_test=20)
    out = tmp_path / "bench.json"
    args = ["bench", "serve", "-i", str(tmp_path / "index"), "--clients", "1,3", "--seconds", "1", "--queue", "2"]
    result = CliRunner().invoke(app, [*args, "--overload", "40", "--json", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert [(lv["kind"], lv["clients"]) for lv in report["levels"]] == [
        ("text search", 1), ("text search", 3), ("feedback round", 1), ("feedback round", 3),
    ]  # fmt: skip
    assert all(lv["requests"] > 0 and lv["server_errors"] == 0 for lv in report["levels"])
    assert report["bare"]["requests_per_s"] > 0 and report["machine"]["cpu_count"] >= 1
    assert sum(report["overload"]["status"].values()) == 40 and "text rps ratio to bare" in report["goals"]
