"""The web page in a real browser: headless Debian Chromium driven by Playwright, against the real app
(uvicorn on a free loopback port, in a thread) over a tiny scene index. The preset composes (the
bundled scene captioner describes the reference image) and rewrites from feedback, both with a fake
chat model, so a feedback round really changes the query and the hits.

Chromium comes from Debian (``apt-get install chromium``; ``.ci/run`` installs it); Playwright's own
browser download cannot work offline. Without a Chromium binary these tests skip with that reason.
Every test writes a screenshot to its tmp folder; with ``VIEWFINDER_PAGE_PNG=reports/serve/page.png``
the feedback test also writes the one the README and the closing note show.
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import pytest
from helpers import tiny_scene_index, write_fake_chat

CHROMIUM = (
    os.environ.get("VIEWFINDER_CHROMIUM")
    or shutil.which("chromium")
    or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
)
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--disable-quic",
]
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="no Chromium binary (apt-get install chromium, or set VIEWFINDER_CHROMIUM)"
)

REWRITTEN = "a large red star at the top"
COMPOSED = "a large blue star at the top"
N_SCENES = 24
K = 12
TIMEOUT_MS = 20_000


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> Iterator[SimpleNamespace]:
    """The app serving one tiny scene index under two names (the page's index picker), on a free port."""
    from viewfinder.pipeline.serve import ServeSettings, create_app

    root = tmp_path_factory.mktemp("serve-browser")
    tiny_scene_index(root, seed=5, n_test=N_SCENES)
    write_fake_chat(root / "llm-rewrite.yaml", REWRITTEN)
    write_fake_chat(root / "llm-compose.yaml", COMPOSED)
    (root / "agent.yaml").write_text(
        "encoder: tiny-test\nindex: {num_workers: 0}\nstages:\n"
        "  - compose: {model: llm-compose.yaml}\n"
        "  - rewrite: {model: llm-rewrite.yaml}\n"
        f"  - preselect: {{k: {N_SCENES}}}\n"
    )
    app = create_app(
        {"scenes": root / "index", "again": root / "index"}, preset=str(root / "agent.yaml"), settings=ServeSettings()
    )
    with _running(app) as url:
        yield SimpleNamespace(url=url, root=root, port=int(url.rsplit(":", 1)[1]))


@contextmanager
def _running(app) -> Iterator[str]:
    """``app`` served by uvicorn in a thread on a free loopback port; yields its base URL."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True, name="uvicorn")
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """One headless Chromium with a fresh profile for the module (a page per test)."""
    from playwright.sync_api import sync_playwright

    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(profile),
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1366, "height": 768},
        )
        context.set_default_timeout(TIMEOUT_MS)
        try:
            yield context
        finally:
            context.close()


@pytest.fixture
def page(browser, served):
    """A new tab; JavaScript errors on the page fail the test."""
    tab = browser.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    yield tab
    tab.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


# ------------------------------------------------------------------------------------------- helpers
def _open(page, served, query: str = "") -> None:
    page.goto(f"{served.url}/{query}")
    page.wait_for_selector("body[data-ready]")


def _search(page, text: str, k: int = K) -> list[int]:
    page.fill("#q-k", str(k))
    page.fill("#q-text", text)
    page.click("#search-btn")
    page.wait_for_function(f"document.querySelectorAll('#grid .hit').length === {k}")
    return _grid_ids(page)


def _grid_ids(page) -> list[int]:
    return [int(x) for x in page.eval_on_selector_all("#grid .hit", "cards => cards.map(c => c.dataset.id)")]


def _marks(page) -> dict[int, str]:
    marks = page.eval_on_selector_all("#grid .hit", "cards => cards.map(c => [c.dataset.id, c.dataset.mark])")
    return {int(i): m for i, m in marks if m}


def _wait_thumbnails(page) -> None:
    page.wait_for_function(
        "[...document.querySelectorAll('#grid .hit img')].every(i => i.complete && i.naturalWidth > 0)"
    )


def _screenshot(page, tmp_path: Path, name: str) -> Path:
    _wait_thumbnails(page)
    path = tmp_path / name
    page.screenshot(path=str(path))
    assert path.stat().st_size > 10_000  # a rendered page, not a blank one
    return path


# --------------------------------------------------------------------------------------------- tests
def test_search_mark_two_hits_next_round_rewrites_and_reload_restores(page, served, tmp_path):
    _open(page, served)
    assert page.is_visible("#index-picker")  # two indexes served
    first = _search(page, "a star")
    assert page.inner_text("#current-query") == "a star"
    assert "scenes" in page.url and "session=" in page.url

    cards = page.locator("#grid .hit")
    cards.nth(0).click()  # one click: relevant
    cards.nth(1).locator(".mark-no").click()  # the button: not relevant
    assert _marks(page) == {first[0]: "relevant", first[1]: "irrelevant"}
    assert page.is_hidden("#no-feedback")
    assert "1 relevant, 1 not relevant" in page.inner_text("#mark-count")

    page.click("#next-round")
    page.wait_for_selector("#rewritten-query")
    assert page.inner_text("#rewritten-query") == REWRITTEN
    assert page.inner_text("#current-query") == REWRITTEN
    second = _grid_ids(page)
    assert second != first  # the grid changed
    badges = page.eval_on_selector_all("#grid .hit .move", "bs => bs.map(b => b.textContent)")
    assert len(badges) == K and any(b == "new" or "→" in b for b in badges)
    summary = page.inner_text("#moves-summary")
    assert "new" in summary and "up" in summary
    # the trace panel: what each stage did this round, the rewrite among them
    assert page.inner_text("#trace-rewritten") == REWRITTEN
    stages = page.eval_on_selector_all("#trace .step", "s => s.map(x => x.dataset.stage)")
    assert stages == ["compose", "rewrite", "preselect"]
    assert "ms" in page.inner_text("#trace .timings")
    assert _marks(page) == {}  # the new round starts unmarked

    page.locator("#grid .hit").nth(2).click()  # a mark not yet sent survives the reload too
    marked = {second[2]: "relevant"}
    shot = _screenshot(page, tmp_path, "page.png")
    if os.environ.get("VIEWFINDER_PAGE_PNG"):
        target = Path(os.environ["VIEWFINDER_PAGE_PNG"])
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, target)

    url = page.url
    page.reload()
    page.wait_for_selector("body[data-ready]")
    page.wait_for_selector("#rewritten-query")
    assert page.url == url
    assert page.inner_text("#rewritten-query") == REWRITTEN
    assert _grid_ids(page) == second
    assert _marks(page) == marked
    assert page.locator(".round-list li").count() == 2
    assert "(from 1 relevant, 1 not)" in page.inner_text(".round-list li >> nth=1")
    assert page.input_value("#q-text") == "a star"
    # an earlier round can be looked at (read-only), then back
    page.locator(".round-list button").nth(0).click()
    assert _grid_ids(page) == first and page.is_disabled("#next-round")
    page.locator(".round-list button").nth(1).click()
    assert _grid_ids(page) == second


def test_keyboard_only_search_mark_and_next_round(page, served):
    _open(page, served)
    page.focus("#q-text")
    page.keyboard.type("a circle")
    page.keyboard.press("Enter")
    page.wait_for_selector("#grid .hit")
    ids = _grid_ids(page)
    focused = lambda: page.evaluate("document.activeElement.dataset.id")  # noqa: E731
    assert focused() == str(ids[0])  # the results take the focus
    page.keyboard.press("r")
    page.keyboard.press("ArrowRight")
    assert focused() == str(ids[1])
    page.keyboard.press("n")
    page.keyboard.press("ArrowRight")
    page.keyboard.press("+")
    page.keyboard.press("0")  # cleared again
    page.keyboard.press("ArrowRight")
    page.keyboard.press("-")
    assert _marks(page) == {ids[0]: "relevant", ids[1]: "irrelevant", ids[3]: "irrelevant"}
    label = page.get_attribute(f'#grid .hit[data-id="{ids[0]}"]', "aria-label")
    assert label.startswith("Hit 1") and label.endswith("marked relevant")
    # the grid is one tab stop (arrows move inside it): Shift+Tab from a hit reaches "Next round"
    page.keyboard.press("Shift+Tab")
    assert page.evaluate("document.activeElement.id") == "next-round"
    page.keyboard.press("Enter")
    page.wait_for_selector("#rewritten-query")
    assert page.inner_text("#rewritten-query") == REWRITTEN
    assert "round=" not in page.url and "session=" in page.url


def test_composed_search_with_an_uploaded_image(page, served, tmp_path):
    _open(page, served, "?index=again")
    assert page.input_value("#index-select") == "again"
    assert page.is_hidden("#q-edit")  # the edit line comes with an image
    reference = next((served.root / "scenes" / "images" / "test").glob("*.png"))
    page.set_input_files("#q-file", str(reference))
    assert page.is_visible("#q-edit") and page.is_visible("#drop-preview")
    page.fill("#q-edit", "make the star blue")
    page.fill("#q-k", str(K))
    page.click("#search-btn")
    page.wait_for_function(f"document.querySelectorAll('#grid .hit').length === {K}")
    assert page.inner_text("#current-query") == COMPOSED
    assert "index=again" in page.url
    compose = page.locator('#trace .step[data-stage="compose"]')
    text = compose.inner_text()
    assert COMPOSED in text and "reference_caption" in text  # the captioner's description of the reference
    _screenshot(page, tmp_path, "composed.png")

    # the image alone, chosen again from the keyboard, without an edit: a plain image search
    page.click("#drop-clear")
    assert page.is_hidden("#q-edit") and page.is_enabled("#q-text")
    page.eval_on_selector("#q-file", "input => input.addEventListener('click', () => { window.chooserOpened = true; })")
    page.focus("#drop")
    page.keyboard.press("Enter")  # the drop opens the file chooser from the keyboard
    assert page.evaluate("window.chooserOpened === true")
    page.set_input_files("#q-file", str(reference))
    page.fill("#q-edit", "")
    page.click("#search-btn")
    page.wait_for_function("document.querySelector('#current-query')?.textContent === '(image)'")
    assert len(_grid_ids(page)) == K


def test_dialogue_asks_and_the_answer_runs_a_round(page, served):
    _open(page, served)
    page.fill("#q-text", "a star")
    page.click("#ask-btn")
    page.wait_for_selector("#answer-form:not([hidden])")
    question = page.inner_text("#question")
    assert question.endswith("?")
    assert "dialogue=" in page.url and page.is_hidden("#next-round")
    page.fill("#answer-text", "yes, a red one")
    page.keyboard.press("Enter")
    page.wait_for_function("document.querySelectorAll('#turns .turn').length >= 3")
    turns = page.inner_text("#turns")
    assert question in turns and "yes, a red one" in turns
    assert page.inner_text("#query-line").startswith("Round 1")

    page.reload()
    page.wait_for_selector("body[data-ready]")
    page.wait_for_selector("#answer-form:not([hidden])")
    assert question in page.inner_text("#turns") and "yes, a red one" in page.inner_text("#turns")
    assert page.inner_text("#query-line").startswith("Round 1")


def test_api_errors_are_shown_in_the_page(page, served):
    _open(page, served, "?index=scenes&session=no-such-session")
    page.wait_for_selector("#error:not([hidden])")
    assert "404" in page.inner_text("#error-text") and "no-such-session" in page.inner_text("#error-text")
    assert "session=" not in page.url  # the dead session is dropped from the URL

    _open(page, served, "?index=nowhere")
    assert 'No index named "nowhere"' in page.inner_text("#error-text")

    # a session that ends on the server (expired, deleted) while the page still shows it
    _search(page, "a star")
    session = page.evaluate("new URLSearchParams(location.search).get('session')")
    page.locator("#grid .hit").nth(0).click()
    status = page.evaluate(
        "(sid) => fetch(`/api/indexes/scenes/sessions/${sid}`, {method: 'DELETE'}).then(r => r.status)", session
    )
    assert status == 204
    page.click("#next-round")
    page.wait_for_selector("#error:not([hidden])")
    assert "404" in page.inner_text("#error-text") and "no live session" in page.inner_text("#error-text")
    page.click("#error-close")
    assert page.is_hidden("#error")

    # an upload that is not an image: the server's 4xx detail, in the page
    bad = served.root / "not-an-image.png"
    bad.write_bytes(b"this is not a picture")
    page.set_input_files("#q-file", {"name": "x.png", "mimeType": "image/png", "buffer": bad.read_bytes()})
    page.click("#search-btn")
    page.wait_for_selector("#error:not([hidden])")
    assert page.inner_text("#error-text")[:1] == "4"


def test_the_page_needs_no_network_but_the_server(page, served):
    """Every request the page makes goes to its own server (no CDN, no fonts from elsewhere)."""
    hosts: set[str] = set()
    page.on("request", lambda req: hosts.add(req.url.split("/")[2]))
    _open(page, served)
    _search(page, "a blue circle")
    _wait_thumbnails(page)
    assert hosts == {f"127.0.0.1:{served.port}"}


def test_a_token_server_works_once_the_page_was_opened_with_its_token(browser, served):
    """Off loopback the server needs a token: /?token=... sets its cookie, and the page's requests carry it."""
    from viewfinder.pipeline.serve import create_app

    app = create_app({"scenes": served.root / "index"}, preset="tiny", token="s3cret-token")
    page = browser.new_page()
    try:
        with _running(app) as url:
            refused = page.goto(f"{url}/")
            assert refused.status == 401
            page.goto(f"{url}/?token=s3cret-token")
            page.wait_for_selector("body[data-ready]")
            assert "token" not in page.url
            assert page.is_hidden("#error") and page.is_hidden("#index-picker")  # one index: no picker
            _search(page, "a red star")
            _wait_thumbnails(page)  # pictures load with the cookie too
            assert page.is_visible("#no-feedback")  # the tiny preset rewrites nothing: the page says so
    finally:
        page.context.clear_cookies()
        page.close()
