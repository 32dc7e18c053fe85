// datakit review: the page. Plain JavaScript, no build step, no library, nothing fetched from elsewhere.
// Every change goes to the server at once (it keeps a draft in OUT); "Save" writes OUT.
// Text from the dataset (names, tags, notes, warnings) is only ever set with textContent.
// One file on purpose, in sections (server, tags, filter, drawing, moving, editor, bulk, large view,
// saving, keys): every request must carry the session's token, and ES module imports cannot add it
// to the URLs they fetch, so splitting the script would mean a loader of our own.
"use strict";

(() => {
  const TOKEN = document.querySelector('meta[name="review-token"]').content;
  const $ = (id) => document.getElementById(id);

  const S = {
    items: [],          // as the server sends them
    byKey: new Map(),
    vocab: [],          // [{tag, count}] of the upstream captions
    visible: [],        // items shown, in order
    focus: 0,           // index into visible
    selected: new Set(), // keys
    anchor: null,       // index into visible where a Shift selection started
    cards: new Map(),   // key -> card element
    unsaved: 0,
    context: {},
    viewer: null,       // key shown in the large view, or null
    finished: false,
    busy: Promise.resolve(),
  };

  // ---------------------------------------------------------------------------------------------
  // Talking to the server

  async function api(path, body) {
    const opts = { headers: { "X-Review-Token": TOKEN } };
    if (body !== undefined) {
      opts.method = "POST";
      opts.headers["Content-Type"] = "application/json";
      opts.body = JSON.stringify(body);
    }
    const res = await fetch(path, opts);
    let data = null;
    try { data = await res.json(); } catch (e) { data = { error: res.statusText }; }
    if (!res.ok) throw new Error((data && data.error) || `${res.status} ${res.statusText}`);
    return data;
  }

  // Changes are sent one after another, in the order they were made.
  function send(path, body) {
    const run = S.busy.then(() => api(path, body));
    S.busy = run.catch(() => {});
    return run.then((data) => { if (data.items) update(data.items); if ("unsaved" in data) S.unsaved = data.unsaved; status(); return data; })
      .catch((err) => { status(err.message, "error"); throw err; });
  }

  function decide(keys, change) {
    if (!keys.length) return Promise.resolve();
    return send("api/decide", { changes: keys.map((key) => Object.assign({ key }, change)) });
  }

  function picture(kind, item) {
    return `api/${kind}/${item.index}?token=${encodeURIComponent(TOKEN)}`;
  }

  // ---------------------------------------------------------------------------------------------
  // Tags

  function canon(tag) {
    return tag.replace(/\\([()[\]])/g, "$1").replace(/(^|[^\W_])_(?=[^\W_])/g, "$1 ").replace(/\s+/g, " ").trim().toLowerCase();
  }

  function vocabulary() {
    // The dataset's tags as they are now (edits included), most common first.
    const counts = new Map();
    for (const it of S.items) {
      for (const t of new Set(it.tags.map(canon))) counts.set(t, (counts.get(t) || 0) + 1);
    }
    const spelled = new Map();
    for (const it of S.items) for (const t of it.tags) if (!spelled.has(canon(t))) spelled.set(canon(t), t);
    for (const v of S.vocab) spelled.set(canon(v.tag), v.tag);
    return [...counts.entries()].map(([k, n]) => ({ tag: spelled.get(k) || k, count: n }))
      .sort((a, b) => b.count - a.count || a.tag.localeCompare(b.tag));
  }

  function suggestions(text, exclude) {
    const q = canon(text);
    if (!q) return [];
    const have = new Set(exclude.map(canon));
    const all = vocabulary().filter((v) => !have.has(canon(v.tag)));
    const starts = all.filter((v) => canon(v.tag).startsWith(q));
    const inside = all.filter((v) => !canon(v.tag).startsWith(q) && canon(v.tag).includes(q));
    return starts.concat(inside).slice(0, 10);
  }

  // ---------------------------------------------------------------------------------------------
  // Filter and sort

  function factValue(it, name) {
    const want = name.toLowerCase().replace(/_/g, " ");
    for (const [k, v] of Object.entries(it.facts)) {
      const key = k.toLowerCase();
      if (key === want || key.endsWith(" " + want)) return v;
    }
    return undefined;
  }

  function terms(text) {
    // Words, or name:"words with spaces" (quotes keep a tag with spaces together).
    return (text.match(/-?\w*(?:[:<>=]+)?"[^"]*"|\S+/g) || []).map((t) => t.replace(/"/g, ""));
  }

  function matches(it, term) {
    if (term.startsWith("-") && term.length > 1) return !matches(it, term.slice(1));
    let m = term.match(/^is:(\w+)$/i);
    if (m) {
      const w = m[1].toLowerCase();
      if (w === "rejected") return it.action === "reject";
      if (w === "kept") return it.action !== "reject";
      if (w === "undecided") return it.action === null;
      if (w === "decided") return it.action !== null;
      if (w === "edited") return it.edited;
      if (w === "selected") return S.selected.has(it.key);
      if (w === "changed") return it.stale;
      return false;
    }
    m = term.match(/^has:(\w+)$/i);
    if (m) {
      const w = m[1].toLowerCase();
      if (w.startsWith("warning")) return it.warnings.length > 0;
      if (w === "note") return !!it.note;
      if (w === "holes") return it.holes.length > 0;
      if (w === "caption") return it.tags.length > 0;
      return false;
    }
    m = term.match(/^tag:(.+)$/i);
    if (m) { const q = canon(m[1]); return it.tags.some((t) => canon(t) === q); }
    m = term.match(/^warning:(.+)$/i);
    if (m) { const q = m[1].toLowerCase(); return it.warnings.some((w) => w.toLowerCase().includes(q)); }
    m = term.match(/^kind:(.+)$/i);
    if (m) return it.kind === m[1].toLowerCase();
    m = term.match(/^([\w ]+?)(<=|>=|<|>|=)(-?[\d.]+)$/);
    if (m) {
      const v = factValue(it, m[1]); const x = parseFloat(m[3]);
      if (typeof v !== "number") return false;
      return { "<": v < x, ">": v > x, "<=": v <= x, ">=": v >= x, "=": v === x }[m[2]];
    }
    m = term.match(/^([\w ]+):(.+)$/);
    if (m) {
      const v = factValue(it, m[1]);
      return v !== undefined && String(v).toLowerCase().includes(m[2].toLowerCase());
    }
    const q = canon(term);
    return it.name.toLowerCase().includes(term.toLowerCase()) || it.tags.some((t) => canon(t).includes(q));
  }

  const SORTS = {
    name: (a, b) => a.name.localeCompare(b.name, undefined, { numeric: true }),
    status: (a, b) => rank(a) - rank(b),
    warnings: (a, b) => b.warnings.length - a.warnings.length,
    tags: (a, b) => a.tags.length - b.tags.length,
  };
  function rank(it) { return it.action === "reject" ? 0 : it.action === null ? 1 : 2; }

  function sortOptions() {
    const sel = $("sort");
    const facts = new Map();
    for (const it of S.items) for (const [k, v] of Object.entries(it.facts)) if (!facts.has(k)) facts.set(k, typeof v);
    const opts = [["name", "name"], ["status", "rejected first"], ["warnings", "most warnings"], ["tags", "fewest tags"]];
    for (const [k] of facts) opts.push([`fact:${k}`, k]);
    sel.replaceChildren(...opts.map(([v, label]) => { const o = document.createElement("option"); o.value = v; o.textContent = label; return o; }));
  }

  function sorter(value) {
    if (SORTS[value]) return SORTS[value];
    const name = value.slice(5);
    return (a, b) => {
      const x = a.facts[name], y = b.facts[name];
      if (x === undefined || y === undefined) return (x === undefined) - (y === undefined);
      return typeof x === "number" && typeof y === "number" ? x - y : String(x).localeCompare(String(y));
    };
  }

  function refilter(keepKey) {
    const key = keepKey || (S.visible[S.focus] && S.visible[S.focus].key);
    const ts = terms($("filter").value.trim());
    const cmp = sorter($("sort").value || "name");
    S.visible = S.items.filter((it) => ts.every((t) => matches(it, t))).sort((a, b) => cmp(a, b) || SORTS.name(a, b));
    const grid = $("grid");
    grid.replaceChildren(...S.visible.map((it) => S.cards.get(it.key)));
    const at = S.visible.findIndex((it) => it.key === key);
    S.focus = at >= 0 ? at : Math.min(S.focus, Math.max(0, S.visible.length - 1));
    S.anchor = null;
    paintFocus(false);
    tagPanel();
    status();
  }

  // ---------------------------------------------------------------------------------------------
  // Drawing

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function factLine(it) {
    const f = it.facts;
    const parts = [];
    if (it.kind === "composite") {
      if (f.framing) parts.push(f.framing);
      if (typeof f["subject height"] === "number") parts.push(`height ${Math.round(f["subject height"] * 100)}%`);
      if (f.scene || f.background) parts.push(f.scene || f.background);
    } else if (it.kind === "cutout") {
      if (it.holes.length) parts.push(`holes ${f["holes cut"] || 0} cut / ${f["holes kept"] || 0} kept`);
      if (f.confidence) parts.push(`confidence ${f.confidence}`);
      if (f.method) parts.push(f.method);
    }
    if (!parts.length && f.size) parts.push(f.size);
    return parts.join(" · ");
  }

  function makeCard(it) {
    const card = el("div", "card");
    card.setAttribute("role", "gridcell");
    card.dataset.key = it.key;
    const thumb = el("div", "thumb" + (it.alpha || it.kind === "cutout" ? " checker" : ""));
    const img = el("img");
    img.loading = "lazy";
    img.alt = it.name;
    img.src = picture("thumb", it);
    img.addEventListener("error", () => { thumb.classList.add("broken"); thumb.dataset.why = "cannot show this image"; });
    thumb.append(img, el("span", "badge"), el("span", "badge edited", "edited"));
    const meta = el("div", "meta");
    meta.append(el("div", "name", it.name), el("div", "facts"), el("div", "chips"), el("div", "warn"));
    card.append(thumb, meta);
    card.addEventListener("click", (ev) => {
      const i = S.visible.findIndex((x) => x.key === it.key);
      if (ev.ctrlKey || ev.metaKey) toggleSelect(it.key);
      else if (ev.shiftKey) { S.anchor = S.anchor ?? S.focus; selectRange(S.anchor, i); }
      S.focus = i;
      paintFocus(true);
    });
    card.addEventListener("dblclick", () => openViewer());
    S.cards.set(it.key, card);
    fillCard(it);
    return card;
  }

  function fillCard(it) {
    const card = S.cards.get(it.key);
    card.classList.toggle("reject", it.action === "reject");
    card.classList.toggle("keep", it.action === "keep");
    card.classList.toggle("selected", S.selected.has(it.key));
    card.dataset.action = it.action || "undecided";
    const badge = card.querySelector(".badge");
    badge.className = "badge" + (it.action ? " " + it.action : "");
    badge.textContent = it.action === "reject" ? "rejected" : it.action === "keep" ? "kept" : "";
    badge.hidden = !it.action;
    card.querySelector(".badge.edited").hidden = !it.edited;
    card.querySelector(".facts").textContent = factLine(it);
    card.querySelector(".chips").replaceChildren(...chips(it));
    const warn = card.querySelector(".warn");
    const lines = it.warnings.length ? [`⚠ ${it.warnings.length} warning${it.warnings.length > 1 ? "s" : ""}: ${it.warnings[0]}`] : [];
    if (it.stale) lines.push("changed upstream: decide again");
    warn.textContent = lines.join(" · ");
    warn.title = it.warnings.concat(it.notes).join("\n");
  }

  function chips(it) {
    const before = new Set(it.upstream_tags.map(canon));
    const now = new Set(it.tags.map(canon));
    const keep = S.context.keep_tokens || 0;
    const out = it.tags.map((t, i) => el("span", "chip" + (i < keep ? " fixed" : "") + (before.has(canon(t)) ? "" : " added"), t));
    for (const t of it.upstream_tags) if (!now.has(canon(t))) out.push(el("span", "chip removed", t));
    return out;
  }

  function update(items) {
    for (const fresh of items) {
      const it = S.byKey.get(fresh.key);
      if (!it) continue;
      Object.assign(it, fresh);
      fillCard(it);
    }
    counts();
    tagPanel();
    if (S.viewer) drawViewer();
  }

  function counts() {
    const rej = S.items.filter((i) => i.action === "reject").length;
    const kept = S.items.filter((i) => i.action === "keep").length;
    const edited = S.items.filter((i) => i.edited).length;
    $("counts").textContent = `${S.items.length} items · ${kept} kept · ${rej} rejected · ${S.items.length - kept - rej} undecided · ${edited} edited`;
  }

  function tagPanel() {
    const active = new Set(terms($("filter").value).filter((t) => /^-?tag:/i.test(t)).map((t) => canon(t.replace(/^-?tag:/i, ""))));
    const list = vocabulary().slice(0, 400).map((v) => {
      const li = el("li");
      li.classList.toggle("active", active.has(canon(v.tag)));
      li.append(el("span", "t", v.tag), el("span", "n", String(v.count)));
      li.addEventListener("click", (ev) => {
        const term = `${ev.altKey ? "-" : ""}tag:"${v.tag}"`;
        const f = $("filter");
        f.value = f.value.includes(term) ? f.value.replace(term, "").trim() : `${f.value} ${term}`.trim();
        refilter();
      });
      return li;
    });
    $("tag-list").replaceChildren(...list);
  }

  function status(message, kind) {
    const s = $("status");
    s.className = kind || "";
    if (message) { s.textContent = message; return; }
    const sel = S.selected.size ? ` · ${S.selected.size} selected` : "";
    const shown = S.visible.length !== S.items.length ? ` · ${S.visible.length} shown` : "";
    s.textContent = (S.unsaved ? `${S.unsaved} unsaved change${S.unsaved > 1 ? "s" : ""} (kept in a draft until you save)` : "all saved") + sel + shown
      + " · press ? for keys";
  }

  function paintFocus(scroll) {
    for (const c of document.querySelectorAll(".card.focused")) c.classList.remove("focused");
    const it = S.visible[S.focus];
    if (!it) return;
    const card = S.cards.get(it.key);
    card.classList.add("focused");
    if (scroll) card.scrollIntoView({ block: "nearest" });
    status();
  }

  // ---------------------------------------------------------------------------------------------
  // Moving and selecting

  function columns() {
    const cards = $("grid").children;
    if (!cards.length) return 1;
    const top = cards[0].offsetTop;
    let n = 0;
    while (n < cards.length && cards[n].offsetTop === top) n++;
    return Math.max(1, n);
  }

  function move(delta, extend) {
    if (!S.visible.length) return;
    const from = S.focus;
    S.focus = Math.max(0, Math.min(S.visible.length - 1, S.focus + delta));
    if (extend) { S.anchor = S.anchor ?? from; selectRange(S.anchor, S.focus); } else S.anchor = null;
    paintFocus(true);
  }

  function toggleSelect(key) {
    if (S.selected.has(key)) S.selected.delete(key); else S.selected.add(key);
    fillCard(S.byKey.get(key));
    status();
  }

  function selectRange(a, b) {
    const [lo, hi] = a < b ? [a, b] : [b, a];
    for (let i = lo; i <= hi; i++) S.selected.add(S.visible[i].key);
    for (const it of S.visible) fillCard(it);
    status();
  }

  function clearSelection() {
    const keys = [...S.selected];
    S.selected.clear();
    for (const k of keys) fillCard(S.byKey.get(k));
    status();
  }

  function targets() {
    // The selection when there is one (decisions apply to all of it), else the focused item.
    if (S.selected.size) return { keys: [...S.selected], single: false };
    const it = S.viewer ? S.byKey.get(S.viewer) : S.visible[S.focus];
    return { keys: it ? [it.key] : [], single: true };
  }

  function act(action) {
    const { keys, single } = targets();
    const p = decide(keys, { action });
    if (single) {
      if (S.viewer) { stepViewer(1); } else move(1, false);
    }
    return p;
  }

  // ---------------------------------------------------------------------------------------------
  // Caption editor

  const editor = { key: null, tags: [], active: -1 };

  function openEditor() {
    const it = S.viewer ? S.byKey.get(S.viewer) : S.visible[S.focus];
    if (!it) return;
    editor.key = it.key;
    editor.tags = it.tags.slice();
    editor.active = -1;
    $("editor-title").textContent = `Caption of ${it.name}`;
    $("editor-note").value = it.note || "";
    $("editor-input").value = "";
    drawEditor();
    $("editor").showModal();
    $("editor-input").focus();
  }

  function drawEditor() {
    const keep = S.context.keep_tokens || 0;
    $("editor-chips").replaceChildren(...editor.tags.map((t, i) => {
      const chip = el("span", "chip" + (i < keep ? " fixed" : ""), t);
      const x = el("button", "", "×");
      x.type = "button";
      x.title = `remove ${t}`;
      x.setAttribute("aria-label", `remove ${t}`);
      x.addEventListener("click", () => { editor.tags.splice(i, 1); drawEditor(); $("editor-input").focus(); });
      chip.append(x);
      return chip;
    }));
    drawSuggest("editor", editor.tags, editor);
  }

  function drawSuggest(prefix, exclude, holder) {
    const input = $(`${prefix}-input`);
    const list = suggestions(input.value, exclude);
    holder.list = list;
    if (holder.active >= list.length) holder.active = list.length - 1;
    $(`${prefix}-suggest`).replaceChildren(...list.map((v, i) => {
      const li = el("li", i === holder.active ? "active" : "");
      li.setAttribute("role", "option");
      li.append(el("span", "", v.tag), el("span", "n", String(v.count)));
      li.addEventListener("mousedown", (ev) => { ev.preventDefault(); holder.pick(v.tag); });
      return li;
    }));
  }

  editor.pick = (tag) => {
    const t = tag.trim();
    if (t && !editor.tags.some((x) => canon(x) === canon(t))) editor.tags.push(t);
    $("editor-input").value = "";
    editor.active = -1;
    drawEditor();
  };

  function completeKeys(ev, holder, prefix) {
    // Arrow keys and Tab in a field with suggestions; true when the key was handled.
    const list = holder.list || [];
    if (ev.key === "ArrowDown" && list.length) { holder.active = (holder.active + 1) % list.length; drawSuggest(prefix, holder.exclude ? holder.exclude() : editor.tags, holder); return true; }
    if (ev.key === "ArrowUp" && list.length) { holder.active = holder.active <= 0 ? list.length - 1 : holder.active - 1; drawSuggest(prefix, holder.exclude ? holder.exclude() : editor.tags, holder); return true; }
    if (ev.key === "Tab" && list.length && $(`${prefix}-input`).value.trim()) { holder.pick(list[Math.max(0, holder.active)].tag); return true; }
    return false;
  }

  function closeEditor(save) {
    const key = editor.key;
    shut($("editor"));
    editor.key = null;
    if (!save || !key) return Promise.resolve();
    const pending = $("editor-input").value.trim();
    if (pending) editor.pick(pending);
    const it = S.byKey.get(key);
    const change = {};
    const same = it.tags.length === editor.tags.length && it.tags.every((t, i) => t === editor.tags[i]);
    if (!same) change.tags = editor.tags;
    const note = $("editor-note").value.trim();
    if (note !== (it.note || "")) change.note = note;
    if (!Object.keys(change).length) return Promise.resolve();
    return decide([key], change);
  }

  // ---------------------------------------------------------------------------------------------
  // Bulk tags on the selection

  const bulk = { active: -1 };
  bulk.exclude = () => [];
  bulk.pick = (tag) => { $("bulk-input").value = tag; bulk.active = -1; drawSuggest("bulk", [], bulk); };

  function openBulk() {
    const { keys } = targets();
    if (!keys.length) return;
    bulk.keys = keys;
    $("bulk-title").textContent = `Tags of ${keys.length} item${keys.length > 1 ? "s" : ""}`;
    $("bulk-add").textContent = `Add to ${keys.length}`;
    $("bulk-remove").textContent = `Remove from ${keys.length}`;
    $("bulk-input").value = "";
    drawBulk();
    $("bulk").showModal();
    $("bulk-input").focus();
  }

  function drawBulk() {
    const n = new Map();
    for (const k of bulk.keys) for (const t of S.byKey.get(k).tags) n.set(t, (n.get(t) || 0) + 1);
    $("bulk-tags").replaceChildren(...[...n.entries()].sort((a, b) => b[1] - a[1]).map(([t, c]) => {
      const chip = el("button", "chip", `${t} (${c})`);
      chip.type = "button";
      chip.title = `remove ${t} from every selected item`;
      chip.addEventListener("click", () => bulkApply("remove", t));
      return chip;
    }));
    drawSuggest("bulk", [], bulk);
  }

  function bulkApply(how, tag) {
    const t = (tag ?? $("bulk-input").value).trim();
    if (!t) return Promise.resolve();
    const change = how === "add" ? { add: [t] } : { remove: [t] };
    $("bulk-input").value = "";
    return decide(bulk.keys, change).then(() => { drawBulk(); status(`${how === "add" ? "added" : "removed"} “${t}” ${how === "add" ? "to" : "from"} ${bulk.keys.length} item(s)`, "ok"); });
  }

  // ---------------------------------------------------------------------------------------------
  // Large view

  const SVG = "http://www.w3.org/2000/svg";

  function openViewer() {
    const it = S.visible[S.focus];
    if (!it) return;
    S.viewer = it.key;
    $("viewer").hidden = false;
    drawViewer(true);
  }

  function closeViewer() {
    S.viewer = null;
    $("viewer").hidden = true;
    paintFocus(true);
  }

  function stepViewer(delta) {
    const i = S.visible.findIndex((x) => x.key === S.viewer);
    const next = Math.max(0, Math.min(S.visible.length - 1, i + delta));
    S.focus = next;
    S.viewer = S.visible[next].key;
    paintFocus(true);
    drawViewer(true);
  }

  function holeState(h) {
    const action = h.decision ? (h.decision === "cut" ? "cut" : "kept") : h.action;
    return { action, cls: `hole ${action === "cut" ? "cut" : h.flagged && !h.decision ? "flagged" : "kept"}${h.decision ? " pending" : ""}` };
  }

  function panel(it, back, label) {
    const p = el("div", `panel ${back}`);
    const stack = el("div", "stack");
    const img = el("img");
    img.alt = it.name;
    img.src = picture("image", it);
    stack.append(img);
    img.addEventListener("load", () => fit(p, img));
    if (it.holes.length) {
      const svg = document.createElementNS(SVG, "svg");
      svg.setAttribute("preserveAspectRatio", "none");
      stack.append(svg);
      img.addEventListener("load", () => drawHoles(svg, it, img));
    }
    p.append(stack, el("span", "label", label));
    return p;
  }

  function fit(p, img) {
    // As large as the panel allows, small images too (pixels stay sharp when enlarged a lot).
    if (!img.naturalWidth) return;
    const scale = Math.min((p.clientWidth - 8) / img.naturalWidth, (p.clientHeight - 8) / img.naturalHeight);
    img.style.width = `${Math.max(1, Math.floor(img.naturalWidth * scale))}px`;
    img.style.height = `${Math.max(1, Math.floor(img.naturalHeight * scale))}px`;
    img.classList.toggle("pixelated", scale >= 3);
  }

  function drawHoles(svg, it, img) {
    const size = it.size || [img.naturalWidth, img.naturalHeight];
    svg.setAttribute("viewBox", `0 0 ${size[0]} ${size[1]}`);
    const parts = [];
    for (const h of it.holes) {
      if (!h.contour.length) continue;
      const pts = h.contour.map(([x, y]) => `${x},${y}`).join(" ");
      const st = holeState(h);
      const poly = document.createElementNS(SVG, "polygon");
      poly.setAttribute("points", pts);
      poly.setAttribute("class", st.cls);
      const hit = document.createElementNS(SVG, "polygon");
      hit.setAttribute("points", pts);
      hit.setAttribute("class", "hole-hit");
      const title = document.createElementNS(SVG, "title");
      title.textContent = `region ${h.number}: ${st.action}${h.decision ? " (your decision)" : ""}: ${h.why}`;
      hit.append(title);
      if (h.number !== null) hit.addEventListener("click", () => cycleHole(it, h.number));
      const top = h.contour.reduce((a, b) => (b[1] < a[1] ? b : a));
      const fs = Math.max(10, size[1] / 28);
      const text = document.createElementNS(SVG, "text");
      text.setAttribute("x", top[0]);
      text.setAttribute("y", Math.max(fs, top[1] - fs * 0.3));
      text.setAttribute("font-size", fs);
      text.setAttribute("text-anchor", "middle");
      text.setAttribute("class", st.cls.replace("hole", "hole-label"));
      text.setAttribute("fill", getComputedStyle(document.documentElement).getPropertyValue(st.action === "cut" ? "--cut" : h.flagged && !h.decision ? "--flagged" : "--kept"));
      text.setAttribute("stroke", "#000");
      text.setAttribute("stroke-width", fs / 8);
      text.setAttribute("paint-order", "stroke");
      text.textContent = h.number === null ? "?" : String(h.number);
      parts.push(poly, hit, text);
    }
    svg.replaceChildren(...parts);
  }

  function cycleHole(it, number) {
    const h = it.holes.find((x) => x.number === number);
    if (!h) return Promise.resolve();
    // Cycle: the manifest's own decision -> the other one -> back to the manifest's (undecided).
    const other = h.action === "cut" ? "keep" : "cut";
    const next = h.decision ? null : other;
    return send("api/hole", { key: it.key, number, action: next }).then((d) => {
      if (d.holes_file) status(`region ${number} of ${it.name}: ${next || "as the cut-out decided"}; written to OUT/${d.holes_file}`, "ok");
    });
  }

  function drawViewer(fresh) {
    const it = S.byKey.get(S.viewer);
    if (!it) return;
    if (fresh || !$("viewer-pictures").dataset.key || $("viewer-pictures").dataset.key !== it.key) {
      $("viewer-pictures").dataset.key = it.key;
      const panels = it.alpha || it.kind === "cutout" ? [panel(it, "checker", "on checkerboard"), panel(it, "dark", "on dark")] : [panel(it, "plain", "")];
      $("viewer-pictures").replaceChildren(...panels);
    } else {
      for (const svg of $("viewer-pictures").querySelectorAll("svg")) drawHoles(svg, it, svg.previousSibling);
    }
    const info = $("viewer-info");
    const head = el("h2", "", it.name);
    const st = el("div", `status ${it.action || ""}`, it.action === "reject" ? "rejected" : it.action === "keep" ? "kept" : "not decided (kept when saved)");
    const tags = el("div", "chips");
    tags.append(...chips(it));
    const table = el("table");
    for (const [k, v] of Object.entries(it.facts)) {
      const tr = el("tr");
      tr.append(el("td", "", k), el("td", "", typeof v === "number" && v <= 1 && k !== "holes cut" && k !== "holes kept" && k !== "holes to check" ? `${Math.round(v * 1000) / 10}%` : String(v)));
      table.append(tr);
    }
    const parts = [head, st, tags, table];
    if (it.note) parts.push(el("p", "", `note: ${it.note}`));
    if (it.warnings.length || it.notes.length) {
      const ul = el("ul", "warn");
      for (const w of it.notes.concat(it.warnings)) ul.append(el("li", "", w));
      parts.push(ul);
    }
    if (it.holes.length) {
      parts.push(el("h3", "", "Enclosed regions"));
      const ul = el("ul", "holes-list");
      for (const h of it.holes) {
        const li = el("li");
        const s = holeState(h);
        li.append(el("span", `swatch ${s.cls.split(" ")[1]}`), el("span", "", `${h.number ?? "?"}: ${s.action}${h.decision ? " (yours)" : h.flagged ? " (to check)" : ""}`));
        if (h.number !== null) {
          for (const a of ["cut", "keep"]) {
            const b = el("button", h.decision === a ? "on" : "", a);
            b.type = "button";
            b.addEventListener("click", () => send("api/hole", { key: it.key, number: h.number, action: h.decision === a ? null : a }));
            li.append(b);
          }
        }
        li.title = h.why;
        ul.append(li);
      }
      parts.push(ul, el("p", "hint", "Click a region or press its number to decide it; decisions go to OUT/holes.toml for `datakit cutout --holes-file`."));
    }
    parts.push(el("p", "hint", "← → next · x reject · a keep · u undecided · e caption · Esc back"));
    info.replaceChildren(...parts);
  }

  // ---------------------------------------------------------------------------------------------
  // Saving

  function save(finish) {
    status(finish ? "saving and finishing…" : "saving…");
    return send(finish ? "api/finish" : "api/save", {}).then((d) => {
      const s = d.summary || {};
      const r = s.review || {};
      const line = s.nothing_to_do ? `OUT is up to date (${s.output})` : `saved to ${s.output}: ${r.kept ?? "?"} kept, ${r.rejected ?? "?"} rejected, ${r.edited ?? "?"} captions edited`;
      status(line, "ok");
      if (finish) {
        S.finished = true;
        const box = el("div", "finished");
        box.id = "finished";
        box.append(el("div", "", "Review finished."), el("small", "", line), el("small", "", "You can close this tab."));
        document.body.append(box);
      }
    });
  }

  // ---------------------------------------------------------------------------------------------
  // Keys

  function typing(ev) {
    // A field of a dialog that has just closed keeps the focus for a moment: it is not typing.
    const t = ev.target;
    return t && (t.tagName === "INPUT" || t.tagName === "SELECT" || t.tagName === "TEXTAREA") && !t.closest("dialog:not([open])");
  }

  function shut(dialog) {
    // Close a dialog and give the keys back to the page at once (not when the browser gets round to it).
    if (dialog.contains(document.activeElement)) document.activeElement.blur();
    dialog.close();
  }

  function onKey(ev) {
    if (S.finished) return;
    if ($("editor").open) return editorKey(ev);
    if ($("bulk").open) return bulkKey(ev);
    if ($("help").open) return;
    if (typing(ev)) {
      if (ev.key === "Escape" || ev.key === "Enter") { ev.target.blur(); ev.preventDefault(); }
      return;
    }
    const k = ev.key;
    if ((ev.ctrlKey || ev.metaKey) && k.toLowerCase() === "s") { ev.preventDefault(); save(false); return; }
    if (ev.ctrlKey || ev.metaKey || ev.altKey) {
      if ((ev.ctrlKey || ev.metaKey) && k.toLowerCase() === "a" && !S.viewer) { ev.preventDefault(); selectRange(0, S.visible.length - 1); }
      return;
    }
    if (S.viewer) return viewerKey(ev);
    const handled = {
      ArrowRight: () => move(1, ev.shiftKey), ArrowLeft: () => move(-1, ev.shiftKey),
      ArrowDown: () => move(columns(), ev.shiftKey), ArrowUp: () => move(-columns(), ev.shiftKey),
      Home: () => move(-S.focus, ev.shiftKey), End: () => move(S.visible.length, ev.shiftKey),
      PageDown: () => move(columns() * 3, ev.shiftKey), PageUp: () => move(-columns() * 3, ev.shiftKey),
      " ": () => { const it = S.visible[S.focus]; if (it) toggleSelect(it.key); },
      x: () => act("reject"), Delete: () => act("reject"), a: () => act("keep"), u: () => act(null),
      e: () => openEditor(), t: () => openBulk(), Enter: () => openViewer(),
      "/": () => $("filter").focus(), s: () => save(false), "?": () => $("help").showModal(),
      Escape: () => clearSelection(),
    }[k];
    if (handled) { ev.preventDefault(); handled(); }
  }

  function viewerKey(ev) {
    const k = ev.key;
    const it = S.byKey.get(S.viewer);
    if (/^[1-9]$/.test(k) && it.holes.some((h) => h.number === Number(k))) { ev.preventDefault(); cycleHole(it, Number(k)); return; }
    const handled = {
      ArrowRight: () => stepViewer(1), ArrowDown: () => stepViewer(1), ArrowLeft: () => stepViewer(-1), ArrowUp: () => stepViewer(-1),
      x: () => act("reject"), Delete: () => act("reject"), a: () => act("keep"), u: () => act(null),
      e: () => openEditor(), Escape: () => closeViewer(), Enter: () => closeViewer(), s: () => save(false),
    }[k];
    if (handled) { ev.preventDefault(); handled(); }
  }

  function editorKey(ev) {
    const input = $("editor-input");
    if (ev.key === "Escape") { ev.preventDefault(); closeEditor(false); return; }
    if (ev.key === "Enter" && (ev.ctrlKey || ev.metaKey)) { ev.preventDefault(); closeEditor(true); return; }
    if (ev.target !== input) return;
    if (completeKeys(ev, editor, "editor")) { ev.preventDefault(); return; }
    if (ev.key === "Enter") {
      ev.preventDefault();
      const list = editor.list || [];
      if (editor.active >= 0 && list[editor.active]) editor.pick(list[editor.active].tag);
      else if (input.value.trim()) editor.pick(input.value);
      else closeEditor(true);
      return;
    }
    if (ev.key === "," ) { ev.preventDefault(); if (input.value.trim()) editor.pick(input.value); return; }
    if (ev.key === "Backspace" && !input.value && editor.tags.length) { ev.preventDefault(); editor.tags.pop(); drawEditor(); }
  }

  function bulkKey(ev) {
    if (ev.key === "Escape") { ev.preventDefault(); shut($("bulk")); return; }
    if (ev.target !== $("bulk-input")) return;
    if (completeKeys(ev, bulk, "bulk")) { ev.preventDefault(); return; }
    if (ev.key === "Enter") {
      ev.preventDefault();
      const list = bulk.list || [];
      const tag = bulk.active >= 0 && list[bulk.active] ? list[bulk.active].tag : $("bulk-input").value;
      bulkApply(ev.shiftKey ? "remove" : "add", tag);
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Start

  function wire() {
    document.addEventListener("keydown", onKey);
    window.addEventListener("resize", () => {
      for (const img of $("viewer-pictures").querySelectorAll("img")) fit(img.closest(".panel"), img);
    });
    $("filter").addEventListener("input", () => refilter());
    $("sort").addEventListener("change", () => { refilter(); $("sort").blur(); });
    $("save").addEventListener("click", () => save(false));
    $("finish").addEventListener("click", () => save(true));
    $("help-button").addEventListener("click", () => $("help").showModal());
    $("help-close").addEventListener("click", () => shut($("help")));
    $("editor-ok").addEventListener("click", () => closeEditor(true));
    $("editor-cancel").addEventListener("click", () => closeEditor(false));
    $("editor").addEventListener("cancel", (ev) => { ev.preventDefault(); closeEditor(false); });
    $("editor-input").addEventListener("input", () => { editor.active = -1; drawSuggest("editor", editor.tags, editor); });
    $("bulk-input").addEventListener("input", () => { bulk.active = -1; drawSuggest("bulk", [], bulk); });
    $("bulk-add").addEventListener("click", () => bulkApply("add"));
    $("bulk-remove").addEventListener("click", () => bulkApply("remove"));
    $("bulk-close").addEventListener("click", () => shut($("bulk")));
  }

  async function start() {
    wire();
    let data;
    try { data = await api("api/state"); } catch (err) { status(`cannot load the items: ${err.message}`, "error"); return; }
    S.items = data.items;
    S.vocab = data.vocabulary;
    S.context = data.context || {};
    S.unsaved = data.unsaved;
    for (const it of S.items) { S.byKey.set(it.key, it); makeCard(it); }
    sortOptions();
    counts();
    refilter();
    paintFocus(false);
    document.title = `datakit review · ${S.context.input || ""}`;
    if (data.skipped && data.skipped.length) status(`${data.skipped.length} file(s) of IN are not shown (unreadable or outside IN): ${data.skipped.map((s) => s.source).slice(0, 3).join(", ")}`, "error");
    document.body.dataset.ready = "1";
  }

  start();
})();
