// viewfinder's web page: search, mark hits, run feedback rounds, answer a dialogue, read the trace.
// Plain JS, no build step, no third-party code. Talks to the JSON API under /api (same origin; the
// token, when the server needs one, travels as a cookie the server set when the page was opened
// with ?token=...). The URL holds ?index=NAME&session=ID (or &dialogue=ID), so a reload restores
// the rounds with the GET endpoints; marks not yet sent are kept in sessionStorage.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const el = (tag, props = {}, ...children) => {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props)) {
      if (value === undefined || value === null || value === false) continue;
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = value;
      else if (key === "dataset") Object.assign(node.dataset, value);
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value === true ? "" : value);
    }
    for (const child of children.flat(Infinity)) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  };

  const state = {
    indexes: [],
    index: null, // the served index's description (name, count, stages, composes, reads_feedback, dialogue)
    mode: null, // "session" | "dialogue"
    id: null, // session or dialogue id
    rounds: [], // [{round, query, result, moved, question, answer}]
    shown: -1, // which round the grid shows
    marks: new Map(), // item id -> "relevant" | "irrelevant" (for the last round)
    image: null, // the File chosen as query image
    busy: false,
  };

  // ------------------------------------------------------------------------------------ the API
  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  function describeError(status, body, response) {
    let detail = body && typeof body === "object" ? body.detail : body;
    if (Array.isArray(detail)) {
      // FastAPI's validation errors: [{loc, msg, type}]
      detail = detail
        .map((e) => {
          const where = Array.isArray(e.loc) ? e.loc.filter((p) => p !== "body").join(".") : "";
          return where ? `${where}: ${e.msg}` : e.msg || JSON.stringify(e);
        })
        .join("; ");
    } else if (detail && typeof detail === "object") {
      detail = detail.message || JSON.stringify(detail);
    }
    if (!detail || typeof detail !== "string") detail = response.statusText || "request failed";
    if (status === 401) detail += " (open the page with ?token=… to give the server's token)";
    if (status === 503) {
      const retry = response.headers.get("Retry-After");
      if (retry) detail += ` (try again in ${retry} s)`;
    }
    return `${status}: ${detail}`;
  }

  async function api(path, { method = "GET", json, form } = {}) {
    const options = { method, credentials: "same-origin", headers: { Accept: "application/json" } };
    if (json !== undefined) {
      options.headers["Content-Type"] = "application/json";
      options.body = JSON.stringify(json);
    } else if (form !== undefined) {
      options.body = form;
    }
    let response;
    try {
      response = await fetch(path, options);
    } catch (err) {
      throw new ApiError(0, `The server cannot be reached (${err.message}).`);
    }
    const text = await response.text();
    let body = null;
    try {
      body = text ? JSON.parse(text) : null;
    } catch {
      body = text;
    }
    if (!response.ok) throw new ApiError(response.status, describeError(response.status, body, response));
    return body;
  }

  const indexPath = (suffix = "") => `/api/indexes/${encodeURIComponent(state.index.name)}${suffix}`;

  // ------------------------------------------------------------------------------ busy / errors
  function showError(message) {
    $("error-text").textContent = message;
    $("error").hidden = false;
  }

  function clearError() {
    $("error").hidden = true;
    $("error-text").textContent = "";
  }

  async function run(label, work) {
    if (state.busy) return;
    state.busy = true;
    clearError();
    $("busy").textContent = label;
    document.body.classList.add("is-busy");
    updateControls();
    try {
      await work();
    } catch (err) {
      showError(err instanceof ApiError ? err.message : `Error: ${err.message}`);
      if (!(err instanceof ApiError)) console.error(err);
    } finally {
      state.busy = false;
      $("busy").textContent = "";
      document.body.classList.remove("is-busy");
      updateControls();
    }
  }

  // ------------------------------------------------------------------------------------ the URL
  function writeUrl() {
    const params = new URLSearchParams();
    if (state.index) params.set("index", state.index.name);
    if (state.id) params.set(state.mode === "dialogue" ? "dialogue" : "session", state.id);
    const query = params.toString();
    history.replaceState(null, "", query ? `?${query}` : location.pathname);
  }

  const marksKey = () => `viewfinder:marks:${state.index && state.index.name}:${state.id}:${lastRound()?.round}`;

  function saveMarks() {
    if (!state.id || state.mode !== "session") return;
    try {
      sessionStorage.setItem(marksKey(), JSON.stringify([...state.marks]));
    } catch {
      /* storage full or disabled: marks then live until the reload */
    }
  }

  function loadMarks() {
    state.marks = new Map();
    if (!state.id || state.mode !== "session") return;
    try {
      const saved = JSON.parse(sessionStorage.getItem(marksKey()) || "[]");
      for (const [id, mark] of saved) state.marks.set(id, mark);
    } catch {
      /* nothing saved */
    }
  }

  // --------------------------------------------------------------------------------- the indexes
  async function loadIndexes(wanted) {
    const indexes = await api("/api/indexes");
    state.indexes = Array.isArray(indexes) ? indexes : [];
    const select = $("index-select");
    select.replaceChildren(
      ...state.indexes.map((ix) => el("option", { value: ix.name, text: `${ix.name} (${ix.count} items)` })),
    );
    $("index-picker").hidden = state.indexes.length < 2;
    if (!state.indexes.length) throw new ApiError(0, "The server serves no index.");
    const found = state.indexes.find((ix) => ix.name === wanted);
    if (wanted && !found) showError(`No index named "${wanted}" is served; showing "${state.indexes[0].name}".`);
    selectIndex(found || state.indexes[0]);
  }

  function selectIndex(index) {
    state.index = index;
    $("index-select").value = index.name;
    const stages = (index.stages || []).join(" → ") || "preselect";
    $("index-info").textContent = `${index.count} items · ${index.preset || "preset"}: ${stages}`;
    $("ask-btn").hidden = !index.dialogue;
    $("tab-dialogue").hidden = !index.dialogue;
    updateDropUi();
  }

  function resetRounds() {
    state.mode = null;
    state.id = null;
    state.rounds = [];
    state.shown = -1;
    state.marks = new Map();
    render();
  }

  // ------------------------------------------------------------------------------ the image drop
  function setImage(file) {
    if (file && !(file.type || "").startsWith("image/")) {
      showError(`"${file.name}" is not an image.`);
      return;
    }
    state.image = file || null;
    const preview = $("drop-preview");
    if (preview.src) URL.revokeObjectURL(preview.src);
    if (state.image) {
      preview.src = URL.createObjectURL(state.image);
      preview.alt = `query image ${state.image.name}`;
    } else {
      preview.removeAttribute("src");
      $("q-file").value = "";
    }
    updateDropUi();
  }

  function updateDropUi() {
    const has = !!state.image;
    $("drop-preview").hidden = !has;
    $("drop-clear").hidden = !has;
    $("drop-label").innerHTML = has ? "" : "Drop an image or <u>choose one</u>";
    if (has) $("drop-label").textContent = state.image.name;
    $("drop").classList.toggle("has-image", has);
    const composes = !!(state.index && state.index.composes);
    $("q-edit").hidden = !(has && composes);
    $("q-text").disabled = has;
    $("q-text").placeholder = has
      ? "Searching with the image" + (composes ? " (and the edit)" : "")
      : "Describe the picture you are looking for…";
  }

  // --------------------------------------------------------------------------- search and rounds
  const kValue = () => {
    const k = parseInt($("q-k").value, 10);
    return Number.isFinite(k) && k > 0 ? k : 12;
  };

  function pushRound(entry) {
    state.rounds.push(entry);
    state.shown = state.rounds.length - 1;
    loadMarks();
    writeUrl();
    render();
  }

  async function startSearch() {
    const text = $("q-text").value.trim();
    const k = kValue();
    if (!state.image && !text) {
      showError("Type a description or drop an image first.");
      $("q-text").focus();
      return;
    }
    await run("Searching…", async () => {
      let body;
      if (state.image) {
        const form = new FormData();
        form.append("file", state.image, state.image.name);
        const edit = $("q-edit").value.trim();
        if (edit && state.index.composes) form.append("edit", edit);
        form.append("k", String(k));
        body = await api(indexPath("/sessions/image"), { method: "POST", form });
      } else {
        body = await api(indexPath("/sessions"), { method: "POST", json: { text, k } });
      }
      resetRounds();
      state.mode = "session";
      state.id = body.session;
      pushRound({ round: body.round ?? 0, query: body.result?.query ?? null, result: body.result, moved: null });
      $("grid").querySelector(".hit")?.focus();
    });
  }

  async function nextRound() {
    if (state.mode !== "session" || !state.id) return;
    const relevant = [];
    const irrelevant = [];
    for (const [id, mark] of state.marks) (mark === "relevant" ? relevant : irrelevant).push(id);
    if (!relevant.length && !irrelevant.length) {
      showError("Mark at least one hit relevant or not relevant first.");
      return;
    }
    await run("Next round…", async () => {
      const body = await api(indexPath(`/sessions/${encodeURIComponent(state.id)}/feedback`), {
        method: "POST",
        json: { relevant, irrelevant },
      });
      try {
        sessionStorage.removeItem(marksKey());
      } catch {
        /* ignore */
      }
      const before = lastRound();
      pushRound({
        round: body.round,
        query: body.query ?? body.result?.query ?? null,
        result: body.result,
        moved: body.moved || computeMoves(before?.result, body.result),
        marked: { relevant, irrelevant },
      });
      $("grid").querySelector(".hit")?.focus();
    });
  }

  async function startDialogue() {
    const text = $("q-text").value.trim();
    if (!text) {
      showError("Type a first description, then press Ask me.");
      $("q-text").focus();
      return;
    }
    await run("Starting the dialogue…", async () => {
      const body = await api(indexPath("/dialogues"), { method: "POST", json: { text, k: kValue() } });
      resetRounds();
      state.mode = "dialogue";
      state.id = body.dialogue;
      pushRound({ round: body.round ?? 0, query: body.result?.query ?? text, result: body.result, question: body.question });
      selectTab("dialogue");
      $("answer-text").focus();
    });
  }

  async function answerQuestion() {
    const answer = $("answer-text").value.trim();
    if (!answer) {
      showError("Type an answer to the question first.");
      return;
    }
    await run("Answering…", async () => {
      const before = lastRound();
      const body = await api(indexPath(`/dialogues/${encodeURIComponent(state.id)}/answer`), {
        method: "POST",
        json: { answer },
      });
      before.answer = answer;
      $("answer-text").value = "";
      pushRound({
        round: body.round,
        query: body.query ?? body.result?.query ?? null,
        result: body.result,
        question: body.question,
        unchanged: body.unchanged ?? null,
        moved: body.moved || computeMoves(before.result, body.result),
      });
      $("answer-text").focus();
    });
  }

  // Restore a session or dialogue named in the URL.
  async function restore(kind, id) {
    const path = kind === "dialogue" ? "/dialogues/" : "/sessions/";
    await run("Restoring…", async () => {
      let body;
      try {
        body = await api(indexPath(path + encodeURIComponent(id)));
      } catch (err) {
        if (err instanceof ApiError && err.status === 404) {
          resetRounds();
          writeUrl();
          throw new ApiError(404, `That ${kind} is no longer on the server (${err.message}); start a new search.`);
        }
        throw err;
      }
      state.mode = kind;
      state.id = id;
      const rounds = body.rounds || [];
      const turns = body.turns || [];
      state.rounds = rounds.map((r, i) => ({
        round: r.round ?? i,
        query: r.query ?? r.result?.query ?? null,
        result: r.result,
        question: r.question ?? turns[i]?.question ?? (i === rounds.length - 1 ? body.question : undefined),
        answer: r.answer ?? turns[i]?.answer,
        moved: r.moved || (i > 0 ? computeMoves(rounds[i - 1].result, r.result) : null),
        // the marks that led to this round (given on the round before)
        marked: i > 0 ? (body.feedback || []).find((f) => f.round === i - 1) : undefined,
      }));
      state.shown = state.rounds.length - 1;
      const first = state.rounds[0];
      if (first && first.query && !first.result?.image) $("q-text").value = first.query;
      loadMarks();
      writeUrl();
      render();
      if (kind === "dialogue") selectTab("dialogue");
    });
  }

  function computeMoves(before, after) {
    if (!before || !after) return null;
    // as the server's: the new hits in order, then the ones that left
    const was = new Map((before.hits || []).map((h) => [h.id, h.rank]));
    const now = new Map((after.hits || []).map((h) => [h.id, h.rank]));
    const order = [...now.keys(), ...[...was.keys()].filter((id) => !now.has(id))];
    return order.map((id) => ({ id, before: was.get(id) ?? null, after: now.get(id) ?? null }));
  }

  const lastRound = () => state.rounds[state.rounds.length - 1];

  // -------------------------------------------------------------------------------- the marks
  function setMark(id, mark) {
    if (state.mode !== "session" || state.shown !== state.rounds.length - 1) return;
    if (mark) state.marks.set(id, mark);
    else state.marks.delete(id);
    saveMarks();
    const card = $("grid").querySelector(`.hit[data-id="${CSS.escape(String(id))}"]`);
    if (card) paintMark(card, mark);
    updateControls();
  }

  function cycleMark(id) {
    const now = state.marks.get(id);
    setMark(id, now === undefined ? "relevant" : now === "relevant" ? "irrelevant" : null);
  }

  function paintMark(card, mark) {
    card.classList.toggle("relevant", mark === "relevant");
    card.classList.toggle("irrelevant", mark === "irrelevant");
    card.dataset.mark = mark || "";
    card.querySelector(".mark-yes").setAttribute("aria-pressed", String(mark === "relevant"));
    card.querySelector(".mark-no").setAttribute("aria-pressed", String(mark === "irrelevant"));
    const label = card.dataset.label + (mark ? `, marked ${mark === "relevant" ? "relevant" : "not relevant"}` : "");
    card.setAttribute("aria-label", label);
  }

  // -------------------------------------------------------------------------------- rendering
  const fmt = (x, digits = 3) => (typeof x === "number" && Number.isFinite(x) ? x.toFixed(digits) : String(x ?? "–"));
  const ms = (seconds) => (typeof seconds === "number" ? (seconds < 1 ? `${(seconds * 1000).toFixed(0)} ms` : `${seconds.toFixed(2)} s`) : "–");
  const quoted = (text) => (text === null || text === undefined ? "(an image)" : `“${text}”`);

  function render() {
    renderGrid();
    renderRoundInfo();
    renderTrace();
    renderDialogue();
    updateControls();
  }

  function moveBadge(move) {
    if (!move) return null;
    if (move.before === null || move.before === undefined) return el("span", { class: "move new", text: "new", title: "new in this round" });
    const delta = move.before - move.after;
    const cls = delta > 0 ? "up" : delta < 0 ? "down" : "same";
    const arrow = delta > 0 ? "↑" : delta < 0 ? "↓" : "=";
    return el("span", { class: `move ${cls}`, text: `${arrow} ${move.before}→${move.after}`, title: `rank ${move.before} before, ${move.after} now` });
  }

  function renderGrid() {
    const grid = $("grid");
    const entry = state.rounds[state.shown];
    const hits = entry?.result?.hits || [];
    const markable = state.mode === "session" && state.shown === state.rounds.length - 1;
    const moves = new Map((entry?.moved || []).map((m) => [m.id, m]));
    $("help").hidden = !markable || !hits.length;
    grid.classList.toggle("markable", markable);
    grid.replaceChildren(
      ...hits.map((hit, i) => {
        const stageScores = Object.entries(hit.scores || {}).map(([stage, score]) =>
          el("span", { class: "stage-score", title: `${stage} score` }, `${stage} ${fmt(score)}`),
        );
        const caption = hit.caption || hit.text || "";
        const label = `Hit ${hit.rank}, score ${fmt(hit.score)}${caption ? `: ${caption}` : ""}`;
        const card = el(
          "li",
          { class: "hit", tabindex: i === 0 ? "0" : "-1", dataset: { id: String(hit.id), key: hit.key ?? "", label, rank: String(hit.rank) } },
          el("div", { class: "thumb" }, el("img", { src: hit.thumbnail, alt: caption || `item ${hit.key ?? hit.id}`, draggable: "false" })),
          el(
            "div",
            { class: "meta" },
            el("span", { class: "rank", text: `#${hit.rank}` }),
            moveBadge(moves.get(hit.id)),
            el("span", { class: "score", title: "final score", text: fmt(hit.score) }),
          ),
          el("div", { class: "scores" }, stageScores),
          caption ? el("p", { class: "caption", text: caption, title: caption }) : null,
          el(
            "div",
            { class: "marks" },
            el("button", { type: "button", class: "mark-yes", tabindex: "-1", title: "relevant (r or +)", "aria-label": "relevant", "aria-pressed": "false", text: "✓" }),
            el("button", { type: "button", class: "mark-no", tabindex: "-1", title: "not relevant (n or -)", "aria-label": "not relevant", "aria-pressed": "false", text: "✗" }),
            el("a", { class: "open", href: hit.image, target: "_blank", rel: "noopener", tabindex: "-1", title: "open the image (o)", text: "open" }),
          ),
        );
        paintMark(card, markable ? state.marks.get(hit.id) : null);
        return card;
      }),
    );
    if (entry && !hits.length) grid.replaceChildren(el("li", { class: "empty muted", text: "No hits." }));
  }

  function renderRoundInfo() {
    const info = $("round-info");
    const entry = state.rounds[state.shown];
    const line = $("query-line");
    if (!entry) {
      info.replaceChildren("No search yet.");
      line.replaceChildren("Search to see hits.");
      return;
    }
    const prev = state.rounds[state.shown - 1];
    line.replaceChildren(
      el("span", { class: "round-no", text: `Round ${entry.round}` }),
      " ",
      el("span", { class: "muted", text: prev ? "rewritten query " : "query " }),
      el("q", { id: "current-query", class: "current-query", text: entry.query ?? "(image)" }),
    );
    const parts = [];
    // the rounds so far, each one clickable to look back
    const list = el(
      "ol",
      { class: "round-list" },
      state.rounds.map((r, i) =>
        el(
          "li",
          { class: i === state.shown ? "current" : "" },
          el(
            "button",
            { type: "button", class: "link", "aria-current": i === state.shown ? "true" : null, onclick: () => showRound(i) },
            `${r.round}: `,
            el("span", { class: "q", text: quoted(r.query) }),
          ),
          r.marked ? el("span", { class: "muted small", text: ` (from ${r.marked.relevant.length} relevant, ${r.marked.irrelevant.length} not)` }) : null,
        ),
      ),
    );
    parts.push(list);
    if (prev) {
      parts.push(
        el(
          "p",
          { class: "rewrite" },
          el("span", { class: "muted", text: "The query was " }),
          el("q", { text: prev.query ?? "(image)" }),
          el("span", { class: "muted", text: " and is now " }),
          el("q", { id: "rewritten-query", text: entry.query ?? "(image)" }),
        ),
      );
      if (entry.unchanged) {
        parts.push(el("p", { id: "answer-unchanged", class: "muted" }, `That answer changed nothing: ${entry.unchanged}`));
      }
      // moved: every item of either round, rank before and after (null: not among that round's hits)
      const moves = entry.moved || [];
      const count = (test) => moves.filter(test).length;
      const fresh = count((m) => m.before == null && m.after != null);
      const left = count((m) => m.before != null && m.after == null);
      const up = count((m) => m.before != null && m.after != null && m.before > m.after);
      const down = count((m) => m.before != null && m.after != null && m.before < m.after);
      const same = count((m) => m.before != null && m.before === m.after);
      parts.push(
        el("p", { id: "moves-summary", class: "moves" }, `${fresh} new, ${up} up, ${down} down, ${same} unchanged, ${left} gone`),
      );
    }
    if (state.shown !== state.rounds.length - 1) {
      parts.push(el("p", { class: "muted small" }, "An earlier round: ", el("button", { type: "button", class: "link", onclick: () => showRound(state.rounds.length - 1), text: "back to the last round" }), " to mark hits."));
    }
    info.replaceChildren(...parts);
  }

  function showRound(i) {
    state.shown = i;
    render();
  }

  function notesView(notes) {
    const entries = Object.entries(notes || {});
    if (!entries.length) return null;
    return el(
      "dl",
      { class: "notes" },
      entries.map(([key, value]) => {
        let shown;
        if (value !== null && typeof value === "object") {
          const json = JSON.stringify(value, null, 1);
          shown = json.length > 80 ? el("details", {}, el("summary", { text: Array.isArray(value) ? `${value.length} item${value.length === 1 ? "" : "s"}` : "details" }), el("pre", { text: json })) : el("code", { text: json });
        } else {
          shown = el("span", { text: typeof value === "number" && !Number.isInteger(value) ? fmt(value, 4) : String(value) });
        }
        return [el("dt", { text: key }), el("dd", {}, shown)];
      }),
    );
  }

  function stepView(step) {
    const changed = step.query_out !== step.query_in;
    const top = (step.candidates || step.top || []).slice(0, 5);
    const stages = [...new Set(top.flatMap((c) => Object.keys(c.scores || {})))];
    return el(
      "li",
      { class: "step", dataset: { stage: step.stage } },
      el("div", { class: "step-head" }, el("b", { text: step.stage }), step.round !== undefined ? el("span", { class: "muted small", text: ` round ${step.round}` }) : null, el("span", { class: "secs", text: ms(step.seconds) })),
      changed
        ? el("div", { class: "io" }, el("q", { text: step.query_in ?? "(image)" }), " → ", el("q", { class: "out", text: step.query_out ?? "(image)" }))
        : step.query_in
          ? el("div", { class: "io muted" }, "query ", el("q", { text: step.query_in }), " (unchanged)")
          : null,
      notesView(step.notes),
      top.length
        ? el(
            "table",
            { class: "top" },
            el("thead", {}, el("tr", {}, el("th", { text: "#" }), el("th", { text: "item" }), el("th", { text: "score" }), stages.map((s) => el("th", { text: s })))),
            el(
              "tbody",
              {},
              top.map((c, i) => el("tr", {}, el("td", { text: String(i + 1) }), el("td", { text: c.key ?? c.id, title: `id ${c.id}` }), el("td", { text: fmt(c.score) }), stages.map((s) => el("td", { text: fmt(c.scores?.[s]) })))),
            ),
          )
        : null,
    );
  }

  function renderTrace() {
    const box = $("trace");
    const entry = state.rounds[state.shown];
    if (!entry) {
      box.replaceChildren("What each stage did appears here after a search.");
      return;
    }
    const result = entry.result || {};
    const trace = result.trace;
    const timings = result.timings || {};
    const total = Object.values(timings).reduce((a, b) => a + (typeof b === "number" ? b : 0), 0);
    const parts = [];
    const steps = trace?.steps || [];
    const normalised = steps.find((s) => s.stage === "normalise" && s.query_out);
    const rewritten = steps.filter((s) => s.query_out && s.query_out !== s.query_in && s.stage !== "normalise").pop();
    const summary = el("dl", { class: "summary" });
    if (trace?.image) summary.append(el("dt", { text: "image" }), el("dd", { text: trace.image }));
    if (trace?.query || !trace?.image) {
      summary.append(el("dt", { text: trace?.image ? "edit" : "query" }), el("dd", {}, el("q", { text: trace?.query ?? entry.query ?? "" })));
    }
    if (normalised) summary.append(el("dt", { text: "normalised" }), el("dd", {}, el("q", { text: normalised.query_out })));
    if (rewritten) summary.append(el("dt", { text: `${rewritten.stage}` }), el("dd", {}, el("q", { id: "trace-rewritten", text: rewritten.query_out })));
    parts.push(summary);
    const timingRows = Object.entries(timings);
    if (timingRows.length) {
      parts.push(
        el(
          "div",
          { class: "timings", "aria-label": "time per stage" },
          timingRows.map(([stage, secs]) =>
            el(
              "div",
              { class: "timing" },
              el("span", { class: "t-name", text: stage }),
              el("span", { class: "t-bar" }, el("span", { style: `width:${total ? Math.max(2, (100 * secs) / total).toFixed(1) : 0}%` })),
              el("span", { class: "t-secs", text: ms(secs) }),
            ),
          ),
          el("div", { class: "timing total" }, el("span", { class: "t-name", text: "total" }), el("span"), el("span", { class: "t-secs", text: ms(total) })),
        ),
      );
    }
    if (steps.length) parts.push(el("ol", { class: "steps" }, steps.map(stepView)));
    else parts.push(el("p", { class: "muted", text: "No trace for this round." }));
    box.classList.remove("muted");
    box.replaceChildren(...parts);
  }

  function renderDialogue() {
    const dialogue = state.mode === "dialogue";
    $("dialogue-hint").hidden = dialogue;
    $("answer-form").hidden = !dialogue;
    const turns = $("turns");
    if (!dialogue) {
      turns.replaceChildren();
      return;
    }
    const items = [];
    state.rounds.forEach((r, i) => {
      if (i === 0) items.push(el("li", { class: "turn you" }, el("span", { class: "who", text: "you" }), r.query ?? ""));
      else if (r.query) items.push(el("li", { class: "turn sys small" }, el("span", { class: "who", text: "query" }), el("q", { text: r.query })));
      if (r.question && r.answer !== undefined) {
        items.push(el("li", { class: "turn sys" }, el("span", { class: "who", text: "system" }), r.question));
        items.push(el("li", { class: "turn you" }, el("span", { class: "who", text: "you" }), r.answer));
      }
    });
    turns.replaceChildren(...items);
    const last = lastRound();
    const question = last?.question;
    $("question").textContent = question ? question : "The system has no more questions.";
    $("answer-text").disabled = !question;
  }

  function updateControls() {
    const busy = state.busy;
    const entry = lastRound();
    const canMark = state.mode === "session" && !!entry;
    const n = state.marks.size;
    $("next-round").hidden = state.mode === "dialogue";
    $("next-round").disabled = busy || !canMark || n === 0 || state.shown !== state.rounds.length - 1;
    $("no-feedback").hidden = !(canMark && state.index && !state.index.reads_feedback);
    $("next-round").title = state.index && !state.index.reads_feedback ? "this index's preset does not read feedback: the next round reruns the query" : "run the next round with your marks";
    const rel = [...state.marks.values()].filter((m) => m === "relevant").length;
    $("mark-count").textContent = canMark ? (n ? `${rel} relevant, ${n - rel} not relevant` : "no hit marked yet") : "";
    $("search-btn").disabled = busy;
    $("ask-btn").disabled = busy;
    $("answer-btn").disabled = busy;
  }

  // ---------------------------------------------------------------------------------- tabs
  function selectTab(name) {
    for (const tab of ["trace", "dialogue"]) {
      const on = tab === name;
      $(`tab-${tab}`).setAttribute("aria-selected", String(on));
      $(`tab-${tab}`).tabIndex = on ? 0 : -1;
      $(`${tab}-panel`).hidden = !on;
    }
  }

  // ---------------------------------------------------------------------------------- events
  function hitOf(target) {
    return target.closest && target.closest(".hit");
  }

  function focusHit(card, delta) {
    const cards = [...$("grid").querySelectorAll(".hit")];
    let i = cards.indexOf(card) + delta;
    i = Math.max(0, Math.min(cards.length - 1, i));
    if (cards[i]) {
      cards.forEach((c) => (c.tabIndex = -1));
      cards[i].tabIndex = 0;
      cards[i].focus();
    }
  }

  function columns() {
    const cards = [...$("grid").querySelectorAll(".hit")];
    if (cards.length < 2) return 1;
    const top = cards[0].offsetTop;
    const n = cards.findIndex((c) => c.offsetTop !== top);
    return n === -1 ? cards.length : n;
  }

  function wire() {
    $("query-form").addEventListener("submit", (event) => {
      event.preventDefault();
      startSearch();
    });
    $("ask-btn").addEventListener("click", () => startDialogue());
    $("next-round").addEventListener("click", () => nextRound());
    $("answer-form").addEventListener("submit", (event) => {
      event.preventDefault();
      answerQuestion();
    });
    $("error-close").addEventListener("click", clearError);
    $("index-select").addEventListener("change", (event) => {
      const index = state.indexes.find((ix) => ix.name === event.target.value);
      if (!index) return;
      selectIndex(index);
      resetRounds();
      writeUrl();
    });
    for (const tab of ["trace", "dialogue"]) $(`tab-${tab}`).addEventListener("click", () => selectTab(tab));
    $("tab-trace").parentElement.addEventListener("keydown", (event) => {
      if (event.key === "ArrowRight" || event.key === "ArrowLeft") {
        const next = $("tab-trace").getAttribute("aria-selected") === "true" && !$("tab-dialogue").hidden ? "dialogue" : "trace";
        selectTab(next);
        $(`tab-${next}`).focus();
      }
    });

    // the image drop
    const drop = $("drop");
    drop.addEventListener("click", (event) => {
      if (event.target.id !== "drop-clear") $("q-file").click();
    });
    drop.addEventListener("keydown", (event) => {
      if (event.key === "Enter" || event.key === " ") {
        event.preventDefault();
        $("q-file").click();
      } else if ((event.key === "Delete" || event.key === "Backspace") && state.image) {
        setImage(null);
      }
    });
    drop.addEventListener("dragover", (event) => {
      event.preventDefault();
      drop.classList.add("over");
    });
    drop.addEventListener("dragleave", () => drop.classList.remove("over"));
    drop.addEventListener("drop", (event) => {
      event.preventDefault();
      drop.classList.remove("over");
      const file = event.dataTransfer && event.dataTransfer.files[0];
      if (file) setImage(file);
    });
    $("q-file").addEventListener("change", (event) => setImage(event.target.files[0] || null));
    $("drop-clear").addEventListener("click", (event) => {
      event.stopPropagation();
      setImage(null);
      drop.focus();
    });

    // the grid: clicks and keys
    const grid = $("grid");
    grid.addEventListener("click", (event) => {
      const card = hitOf(event.target);
      if (!card || event.target.closest("a")) return;
      const id = Number(card.dataset.id);
      if (event.target.closest(".mark-yes")) setMark(id, state.marks.get(id) === "relevant" ? null : "relevant");
      else if (event.target.closest(".mark-no")) setMark(id, state.marks.get(id) === "irrelevant" ? null : "irrelevant");
      else cycleMark(id);
      card.focus();
    });
    grid.addEventListener("keydown", (event) => {
      const card = hitOf(event.target);
      if (!card || event.altKey || event.ctrlKey || event.metaKey) return;
      const id = Number(card.dataset.id);
      const key = event.key;
      let handled = true;
      if (key === "r" || key === "+" || key === "y") setMark(id, "relevant");
      else if (key === "n" || key === "-" || key === "x") setMark(id, "irrelevant");
      else if (key === "0" || key === "u" || key === "Delete" || key === "Backspace") setMark(id, null);
      else if (key === "Enter" || key === " ") cycleMark(id);
      else if (key === "o") window.open(card.querySelector("a.open").href, "_blank", "noopener");
      else if (key === "ArrowRight") focusHit(card, 1);
      else if (key === "ArrowLeft") focusHit(card, -1);
      else if (key === "ArrowDown") focusHit(card, columns());
      else if (key === "ArrowUp") focusHit(card, -columns());
      else if (key === "Home") focusHit(card, -1e6);
      else if (key === "End") focusHit(card, 1e6);
      else handled = false;
      if (handled) event.preventDefault();
    });
    // Tab enters the grid on one card (roving tabindex); keep the focused card as the entry point
    grid.addEventListener("focusin", (event) => {
      const card = hitOf(event.target);
      if (!card) return;
      grid.querySelectorAll(".hit").forEach((c) => (c.tabIndex = c === card ? 0 : -1));
    });
  }

  // ---------------------------------------------------------------------------------- start
  async function main() {
    wire();
    selectTab("trace");
    const params = new URLSearchParams(location.search);
    // the server turned ?token= into a cookie when it served this page: keep it out of the history
    if (params.has("token")) {
      params.delete("token");
      const rest = params.toString();
      history.replaceState(null, "", rest ? `?${rest}` : location.pathname);
    }
    await run("Loading…", () => loadIndexes(params.get("index")));
    if (!state.index) {
      document.body.dataset.ready = "true";
      return;
    }
    const session = params.get("session");
    const dialogue = params.get("dialogue");
    if (dialogue) await restore("dialogue", dialogue);
    else if (session) await restore("session", session);
    else writeUrl();
    document.body.dataset.ready = "true";
  }

  document.addEventListener("DOMContentLoaded", main);
})();
