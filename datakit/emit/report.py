"""report.html: one static page (thumbnails embedded) with the plan, findings, tag stats and captions."""

from __future__ import annotations

import base64
import heapq
import html
from collections import Counter
from pathlib import Path

from datakit.captions import canonical, split_caption
from datakit.emit.balance import Plan
from datakit.imageio import write_text_atomic
from datakit.tags.stats import collect_stats, short_list

TOP_TAGS = 40

_CSS = """
body{font-family:system-ui,sans-serif;margin:1.5rem;color:#222;background:#fafafa}
h1{margin-top:0} table{border-collapse:collapse;margin:.5rem 0 1rem}
td,th{border:1px solid #ccc;padding:.25rem .6rem;text-align:right} th{background:#eee;text-align:left}
td:first-child,td.l{text-align:left}
.grid{display:flex;flex-wrap:wrap;gap:.6rem}
figure{margin:0;width:200px;background:#fff;border:1px solid #ddd;padding:4px;box-sizing:border-box}
figure img{display:block;max-width:192px;max-height:192px;margin:auto}
figcaption{font-size:.75rem;word-break:break-word;margin-top:4px}
figcaption .file{color:#777;display:block}
.warn{color:#a60} .note{color:#555}
"""

# Records, after load, how many images decoded: lets a headless browser check the page renders.
_CHECK = """
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  var el = document.getElementById('render-check');
  el.setAttribute('data-images-ok', ok);
  el.setAttribute('data-images-total', imgs.length);
  el.textContent = ok + ' of ' + imgs.length + ' thumbnails displayed';
});
"""


def tag_table(rows: list[dict]) -> tuple[list[str], list[tuple[str, list[int], int]]]:
    """Tag frequencies per concept: (concept names, [(tag, counts per concept, total)]) most frequent first.

    Counted with dictionaries in one pass (each caption's tags once): linear in the captions' length,
    so one 600k-tag caption costs seconds, not a pandas cross-table of 600k rows.
    """
    spelling: dict[str, str] = {}  # tags match in any spelling; show the first one seen (`sail_kun` stays)
    per_concept: dict[str, Counter] = {}
    total: Counter = Counter()
    for r in rows:
        keys: dict[str, None] = {}
        for t in split_caption(r.get("caption") or ""):
            k = canonical(t)
            spelling.setdefault(k, t)
            keys[k] = None
        per_concept.setdefault(str(r.get("concept")), Counter()).update(keys.keys())
        total.update(keys.keys())
    if not total:
        return [], []
    concepts = sorted(per_concept)
    top = heapq.nsmallest(TOP_TAGS, total, key=lambda k: (-total[k], spelling[k]))  # ties: by name
    return concepts, [(spelling[k], [per_concept[c][k] for c in concepts], total[k]) for k in top]


def caption_stats(out: Path, folders: dict[str, str]) -> dict[str, dict]:
    """`datakit tags stats` summaries of each emitted concept folder."""
    result = {}
    for name, folder in folders.items():
        try:
            result[name] = collect_stats(out / folder, tokenizer="auto").summary
        except Exception as exc:  # statistics must never stop a dataset from being written
            result[name] = {"error": f"{type(exc).__name__}: {exc}"}
    return result


def _stats_table(stats: dict[str, dict]) -> list[str]:
    e = html.escape
    parts = ["<table><tr><th>concept</th><th>images</th><th>captioned</th><th>distinct tags</th><th>tags/image</th>"
             "<th>CLIP tokens max</th><th>over 75 tokens</th><th>in every image</th></tr>"]
    method = ""
    for name, s in stats.items():
        if "error" in s:
            parts.append(f"<tr><td>{e(name)}</td><td colspan='7' class='warn'>{e(s['error'])}</td></tr>")
            continue
        tok = s.get("clip_tokens", {})
        method = tok.get("method", method)
        every = short_list(s.get("in_every_image", []))
        parts.append(
            f"<tr><td>{e(name)}</td><td>{s.get('images')}</td><td>{s.get('captioned')}</td><td>{s.get('distinct_tags')}</td>"
            f"<td>{s.get('tags_per_image', {}).get('mean')}</td><td>{tok.get('max')}</td><td>{tok.get('over_window')}</td>"
            f"<td class='l'>{e(every)}</td></tr>"
        )
    parts.append("</table>")
    if method:
        parts.append(f"<p class='note'>CLIP token counts: {e(method)}. kohya truncates captions beyond 75 tokens "
                     "unless max_token_length is raised.</p>")
    return parts


def _img_tag(out: Path, row: dict) -> str:
    # Only a thumbnail the row owns (its outputs are checked inside OUT): a hand-edited manifest must
    # not pull another file into the page.
    if row.get("thumb") not in row.get("outputs", []):
        return '<span class="warn">(thumbnail missing)</span>'
    thumb = out / row["thumb"]
    try:
        data = base64.b64encode(thumb.read_bytes()).decode("ascii")
    except OSError:
        return '<span class="warn">(thumbnail missing)</span>'
    return f'<img alt="{html.escape(row["file"])}" src="data:image/jpeg;base64,{data}">'


def render(out: Path, *, plan: Plan, folders: dict, rows: list[dict], findings: dict, trigger, keep_tokens,
           stats: dict | None = None) -> str:
    """The report page as HTML text."""
    e = html.escape
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>datakit dataset report</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>datakit dataset report</h1>",
        f"<p>Trigger: <b>{e(str(trigger or '(none)'))}</b> · keep_tokens: {keep_tokens} · "
        f"{plan.images_per_epoch} images per epoch · batch size {plan.batch_size} · {plan.steps_per_epoch} steps per epoch"
        + (f" · {plan.epochs} epochs = {plan.total_steps} steps" if plan.epochs else "") + "</p>",
        "<p id='render-check' class='note'>(thumbnail check runs when the page loads)</p>",
        "<h2>Balance</h2><table><tr><th>concept</th><th>folder</th><th>images</th><th>repeats</th>"
        "<th>steps/epoch</th><th>share</th><th>wanted</th></tr>",
    ]
    for c in plan.concepts + ([plan.reg] if plan.reg else []):
        share = "reg" if c.is_reg else f"{c.share:.1%}"
        want = "" if c.is_reg else f"{c.target_share:.1%}"
        parts.append(f"<tr><td>{e(c.name)}</td><td class='l'>{e(folders[c.name])}</td><td>{c.images}</td><td>{c.repeats}</td>"
                     f"<td>{c.steps}</td><td>{share}</td><td>{want}</td></tr>")
    parts.append("</table>")
    parts.extend(f"<p class='note'>{e(n)}</p>" for n in plan.notes)

    parts.append("<h2>Checks</h2><ul>")
    labels = {
        "near_duplicates": "near-duplicate pairs", "upscaled": "images upscaled into their bucket",
        "no_caption": "images without a caption", "caption_clash": ".txt/.caption clashes",
        "caption_from_dot_caption": "captions taken from .caption files", "flattened": "transparent images flattened",
    }
    for key, label in labels.items():
        items = findings.get(key, [])
        cls = "warn" if items else "note"
        detail = ""
        if items:
            shown = [f"{i['a']} ~ {i['b']} ({i['distance']} bits)" if key == "near_duplicates"
                     else f"{i['item']} ×{i['scale']}" if key == "upscaled" else str(i) for i in items[:10]]
            detail = ": " + e(", ".join(shown)) + (" …" if len(items) > 10 else "")
        parts.append(f"<li class='{cls}'>{len(items)} {e(label)}{detail}</li>")
    parts.append("</ul>")

    concepts, tags = tag_table(rows)
    parts.append("<h2>Tag statistics</h2>")
    if stats:
        parts.extend(_stats_table(stats))
    if tags:
        parts.append("<table><tr><th>tag</th>" + "".join(f"<th>{e(c)}</th>" for c in concepts) + "<th>total</th></tr>")
        for tag, counts, total in tags:
            parts.append(f"<tr><td>{e(tag)}</td>" + "".join(f"<td>{v}</td>" for v in counts) + f"<td>{total}</td></tr>")
        parts.append("</table>")
    else:
        parts.append("<p class='note'>No captions.</p>")

    for c in plan.concepts + ([plan.reg] if plan.reg else []):
        members = [r for r in rows if r.get("concept") == c.name]
        parts.append(f"<h2>{e(c.name)} <small class='note'>({len(members)} images × {c.repeats} repeats, {e(folders[c.name])})</small></h2>")
        parts.append("<div class='grid'>")
        for r in members:
            caption = r.get("caption") or "(no caption: class tokens)"
            parts.append(f"<figure>{_img_tag(out, r)}<figcaption><span class='file'>{e(Path(r['file']).name)}</span>"
                         f"<span class='caption'>{e(caption)}</span></figcaption></figure>")
        parts.append("</div>")
    parts.append(f"<script>{_CHECK}</script></body></html>\n")
    return "\n".join(parts)


def write_report(out: Path, **kwargs) -> None:
    """Write OUT/report.html atomically."""
    write_text_atomic(out / "report.html", render(out, **kwargs))
