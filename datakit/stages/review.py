"""`datakit review`: look at every item in a browser, reject the bad ones, fix captions; write OUT.

Two ways to run, one result:
- in a browser (the default): a local server (datakit.review.server) shows the items; every change
  goes to OUT/.review-draft.json at once, and "Save" writes OUT;
- for scripts and Makefiles, no browser: `--accept-all` keeps every item as it is, `--decisions FILE`
  applies a review.json from an earlier session.

Writing OUT (`write_output`) is a stage like the others: kept items' images hard-linked, captions
hard-linked or (edited) written, rejected items listed in the manifest with the reason "rejected in
review" (nothing in IN is touched), review.json and holes.toml beside them, datakit.json last.
Decisions are per item and image content hash, so a re-run with the same decisions does no work.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

from datakit.captions import canonical
from datakit.console import Reporter
from datakit.errors import UsageError
from datakit.imageio import link_or_copy, open_image, write_text_atomic
from datakit.inputs import discover
from datakit.manifest import BOOKKEEPING_FIELDS, MANIFEST, STAGE_INFO, carried_from
from datakit.paths import printable
from datakit.review.decisions import DECISIONS_FILE, REJECT_REASON, Decision, read_decisions, write_decisions
from datakit.review.items import ReviewItem, ReviewSet, collect
from datakit.review.resolve import resolve
from datakit.stage import StageRun, Task, TaskResult

STAGE = "review"
MODES = ("browser", "accept-all", "decisions")


@dataclass
class ReviewConfig:
    """Options of `datakit review` (see docs/review.md)."""

    input_dir: Path
    out_dir: Path
    accept_all: bool = False
    decisions: Path | None = None  # a review.json to apply without a browser
    host: str = "127.0.0.1"
    port: int = 0  # 0: any free port
    open_browser: bool = False
    copy: bool = False
    force: bool = False

    @property
    def mode(self) -> str:
        return "accept-all" if self.accept_all else "decisions" if self.decisions is not None else "browser"


def check_host(host: str) -> str:
    """The address to listen on: an IP address (not 0.0.0.0/::) or localhost; UsageError otherwise."""
    if host == "localhost":
        return "127.0.0.1"
    try:
        addr = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        raise UsageError(f"--host {host!r}: give an IP address (default 127.0.0.1), not a name") from None
    if addr.is_unspecified:
        raise UsageError(f"--host {host}: listening on every address exposes OUT to the network; give one address")
    return str(addr)


# -- writing OUT ---------------------------------------------------------------------------------


def _write_item(task: Task, shared=None) -> TaskResult:
    """Link a kept item (and its caption, or write the edited one); a rejected one writes nothing."""
    p = task.payload
    item: ReviewItem = p["item"]
    params = task.params
    decision_row = {"decision": params["action"], "decided_by": p["by"]}
    if params["note"]:
        decision_row["note"] = params["note"]
    if p["upstream_row"]:
        decision_row["upstream"] = p["upstream_row"]
    if params["action"] == "reject":
        return TaskResult(key=task.key, status="rejected", reason=REJECT_REASON,
                          row=dict(decision_row, tags=p["tags"]))
    warnings = list(p["notes"])
    if p["check_image"]:
        warnings += open_image(item.path).notes  # a user's own folder: non-images are skipped and named
    out: Path = p["out"]
    name = params["stem"] + item.path.suffix
    link_or_copy(item.path, out / name, copy=p["copy"])
    outputs = [name]
    if params["tags"] is not None:
        caption_name = params["stem"] + ".txt"
        write_text_atomic(out / caption_name, ", ".join(params["tags"]) + "\n")
        outputs.append(caption_name)
    elif item.caption is not None:
        caption_name = params["stem"] + item.caption.suffix
        link_or_copy(item.caption, out / caption_name, copy=p["copy"])
        outputs.append(caption_name)
    else:
        warnings.append("no caption")
    row = dict(decision_row, tags=p["tags"], edited=params["tags"] is not None)
    if params["tags"] is not None:
        row["tags_before"] = list(item.tags)
    return TaskResult(key=task.key, outputs=outputs, row=row, warnings=warnings)


def _trigger_note(tags: list[str], carry: dict) -> str | None:
    """A warning when an edit moved the trigger word from the front that keep_tokens relies on."""
    trigger, keep = carry.get("trigger"), carry.get("keep_tokens") or 0
    if trigger and keep >= 1 and (not tags or canonical(tags[0]) != canonical(trigger)):
        return f"the trigger word {trigger!r} is no longer the first tag (keep_tokens = {keep} expects it there)"
    return None


def _tasks(cfg: ReviewConfig, review: ReviewSet, decisions: dict[str, Decision], by: str) -> list[Task]:
    carry = carried_from(review.upstream)
    tasks = []
    for item in review.items:
        r = resolve(item, decisions.get(item.key))
        action = "reject" if r.action == "reject" else "keep"
        notes = list(r.notes)
        if r.edited:
            trigger = _trigger_note(r.tags, carry)
            if trigger:
                notes.append(trigger)
        files = [item.path] + ([item.caption] if item.caption else [])
        upstream_row = {k: v for k, v in item.row.items() if k not in BOOKKEEPING_FIELDS}
        tasks.append(Task(
            key=item.key,
            inputs=files,
            params={"stem": item.stem, "action": action, "tags": r.tags if r.edited else None, "note": r.note},
            payload={"item": item, "out": Path(cfg.out_dir), "copy": cfg.copy, "by": by, "notes": notes,
                     "tags": r.tags, "upstream_row": upstream_row, "check_image": review.upstream is None},
            source=item.key,
        ))
    return tasks


def open_run(cfg: ReviewConfig, review: ReviewSet, reporter: Reporter) -> StageRun:
    """A StageRun on OUT (checks OUT: apart from IN, not another stage's, writable)."""
    config = {"input_dir": str(cfg.input_dir), "out_dir": str(cfg.out_dir), "copy": cfg.copy}
    return StageRun(STAGE, cfg.out_dir, config, inputs_dir=cfg.input_dir, upstream=review.upstream, force=cfg.force,
                    reporter=reporter, pre_skipped=review.skipped)


def _reuse_rejected(run: StageRun, todo: list[Task]) -> list[Task]:
    """StageRun reuses ok/skipped rows; a rejection recorded with the same fingerprint is as good."""
    left = []
    for task in todo:
        old = run.old_rows.get(task.key)
        if not run.force and old and old.get("status") == "rejected" and old.get("fingerprint") == task.fingerprint:
            run.rows[task.key] = old
            run.reused += 1
        else:
            left.append(task)
    return left


def write_output(cfg: ReviewConfig, review: ReviewSet, decisions: dict[str, Decision], reporter: Reporter,
                 *, by: str, holes=None) -> dict:
    """Write OUT from the decisions (undecided items are kept); returns the datakit.json info.

    `holes` (a callable) writes OUT/holes.toml from the decisions and returns its name, or None.
    """
    tasks = _tasks(cfg, review, decisions, by)
    run = open_run(cfg, review, reporter)
    todo = _reuse_rejected(run, run.plan(tasks))
    out = Path(cfg.out_dir)
    holes_file = holes(decisions, review.items) if holes is not None else None
    if not todo and run.nothing_to_do():
        write_decisions(out / DECISIONS_FILE, decisions)  # only when it changed (decisions about other items)
        reporter.info(f"review: nothing to do, all {len(tasks)} items are up to date in {out} (--force redoes them)")
        return run.summary_from_previous()
    if run.reused:
        reporter.info(f"review: {run.reused} items unchanged, {len(todo)} to do")
    run.invalidate()
    run.map(_write_item, todo, workers=1, description="review")  # links and small files: no pool needed
    write_decisions(out / DECISIONS_FILE, decisions)
    rows = [run.rows[t.key] for t in tasks if t.key in run.rows]
    counts = {
        "kept": sum(1 for r in rows if r.get("status") == "ok"),
        "rejected": sum(1 for r in rows if r.get("status") == "rejected"),
        "edited": sum(1 for r in rows if r.get("status") == "ok" and r.get("edited")),
        "undecided": sum(1 for t in tasks if resolve(t.payload["item"], decisions.get(t.key)).action is None),
    }
    reporter.info(f"review: {counts['kept']} kept ({counts['edited']} captions edited), {counts['rejected']} rejected "
                  f"(listed in {MANIFEST} as {REJECT_REASON!r}); decisions in {out / DECISIONS_FILE}")
    extra = {"review": dict(counts, mode=cfg.mode, decided_by=by, decisions_file=DECISIONS_FILE, holes_file=holes_file)}
    return run.finish(extra=extra)


# -- the three modes -----------------------------------------------------------------------------


def _earlier(out: Path) -> dict[str, Decision]:
    """OUT/review.json of an earlier session ({} when there is none)."""
    path = out / DECISIONS_FILE
    return read_decisions(path) if path.is_file() else {}


def _accept_all(cfg: ReviewConfig, review: ReviewSet) -> dict[str, Decision]:
    """Every item kept as it is; refuses to drop an earlier session's rejections or edits without --force."""
    earlier = _earlier(Path(cfg.out_dir))
    current = {i.key: i.hash for i in review.items}
    lost = [k for k, d in earlier.items() if current.get(k) == d.hash and (d.action == "reject" or d.tags is not None or d.holes)]
    if lost and not cfg.force:
        shown = ", ".join(map(printable, lost[:3])) + (" ..." if len(lost) > 3 else "")
        raise UsageError(
            f"{Path(cfg.out_dir) / DECISIONS_FILE} holds rejections or caption edits for {len(lost)} item(s) ({shown}) "
            f"that --accept-all would discard: apply them with --decisions {Path(cfg.out_dir) / DECISIONS_FILE}, "
            "or pass --force to discard them"
        )
    keep = {k: d for k, d in earlier.items() if k not in current}  # items gone from IN keep their entries
    keep.update({i.key: Decision(hash=i.hash, action="keep") for i in review.items})
    return keep


def _from_file(cfg: ReviewConfig, review: ReviewSet, reporter: Reporter) -> dict[str, Decision]:
    decisions = read_decisions(cfg.decisions)
    stale = [i.key for i in review.items if i.key in decisions and decisions[i.key].hash != i.hash]
    undecided = [i.key for i in review.items if resolve(i, decisions.get(i.key)).action is None]
    if stale:
        reporter.warn(f"{len(stale)} item(s) changed upstream since {cfg.decisions} was written; their decisions "
                      f"no longer apply and they are kept: {', '.join(map(printable, stale[:5]))}{' ...' if len(stale) > 5 else ''}")
    fresh = [k for k in undecided if k not in stale]
    if fresh:
        reporter.warn(f"{len(fresh)} item(s) have no decision in {cfg.decisions} and are kept: "
                      f"{', '.join(map(printable, fresh[:5]))}{' ...' if len(fresh) > 5 else ''}")
    return decisions


def run_review(cfg: ReviewConfig, reporter: Reporter, *, on_ready=None) -> dict:
    """Run the review stage in the mode the options ask for; returns the datakit.json info.

    `on_ready(running)` is called once the browser mode's server listens (default: print its address).
    """
    if cfg.accept_all and cfg.decisions is not None:
        raise UsageError("--accept-all and --decisions exclude each other: give one")
    host = check_host(cfg.host)
    if not 0 <= cfg.port <= 65535:
        raise UsageError(f"--port {cfg.port}: give 1 to 65535, or 0 for any free port")
    inputs = discover(cfg.input_dir, stage=STAGE)
    review = collect(inputs)
    if not review.items:
        raise UsageError(f"no images in {cfg.input_dir}")
    from datakit.review.holes import HolesWriter

    holes = HolesWriter.for_review(review, Path(cfg.out_dir))
    if cfg.mode == "accept-all":
        return write_output(cfg, review, _accept_all(cfg, review), reporter, by="accept-all")
    if cfg.mode == "decisions":
        return write_output(cfg, review, _from_file(cfg, review, reporter), reporter, by="decisions file", holes=holes)
    return _browse(cfg, host, review, reporter, holes, on_ready)


def _browse(cfg: ReviewConfig, host: str, review: ReviewSet, reporter: Reporter, holes, on_ready) -> dict:
    """Serve the page until the user finishes (or presses Ctrl-C); returns the last save's info."""
    from datakit.lock import acquire

    out = Path(cfg.out_dir)
    run = open_run(cfg, review, reporter)  # checks OUT now (apart from IN, ours, writable), not at the first Save
    if not (out / MANIFEST).exists() and not (out / STAGE_INFO).exists():
        run.invalidate()  # marks a new OUT as this stage's work in progress (the draft and holes.toml live there)
    # One session per OUT for as long as the page is open: a second `datakit review` (or any stage)
    # on the same OUT is refused, naming this one. Each save's StageRun takes it again (re-entrant).
    lock = acquire(out, "this review session")
    run.close()
    try:
        return _serve_session(cfg, host, review, reporter, holes, on_ready, out)
    finally:
        lock.release()


def _serve_session(cfg: ReviewConfig, host: str, review: ReviewSet, reporter: Reporter, holes, on_ready, out: Path) -> dict:
    """The session itself, with OUT locked."""
    from datakit.review.images import Pictures
    from datakit.review.server import serve
    from datakit.review.session import DRAFT_FILE, ReviewSession, SessionHooks

    decisions = _earlier(out)
    draft = out / DRAFT_FILE
    if draft.is_file():
        try:
            decisions = read_decisions(draft)
            reporter.info(f"review: unsaved decisions of an earlier session restored from {draft}")
        except UsageError as exc:
            reporter.warn(f"ignoring an unreadable draft ({exc})")
    if host not in ("127.0.0.1", "::1"):
        reporter.warn(f"listening on {host}, not only this machine: anyone who reaches it with the address can change OUT")

    def save(current: dict[str, Decision]) -> dict:
        child = Reporter(quiet=reporter.quiet, json_mode=reporter.json_mode, console=reporter.err)
        return write_output(cfg, review, current, child, by="browser", holes=holes)

    context = {
        "input": str(cfg.input_dir), "output": str(out), "stages": list(review.upstream.get("stages", [])) if review.upstream else [],
        **carried_from(review.upstream),
    }
    session = ReviewSession(review, decisions, out, SessionHooks(save=save, write_holes=holes, context=context))

    def ready(running) -> None:
        if on_ready is not None:
            on_ready(running)
            return
        from rich.markup import escape

        reporter.err.print(f"review: {len(review.items)} items at {escape(running.url)}", soft_wrap=True, highlight=False)
        reporter.err.print("review: \"Save & finish\" on the page ends the session (Ctrl-C stops it; unsaved "
                           f"decisions stay in {escape(str(draft))})", soft_wrap=True, highlight=False)
        if cfg.open_browser:
            import webbrowser

            webbrowser.open(running.url)

    try:
        serve(session, Pictures(review.folder), host=host, port=cfg.port, on_ready=ready)
    except KeyboardInterrupt:
        if session.saves and not session.changes:
            return session.last_info  # saved, nothing since: a normal way to stop the server
        if session.changes:
            reporter.warn(f"{session.changes} change(s) not saved: they stay in {draft} and come back next time")
        raise
    if session.last_info is None:  # the server stopped without a Save (it never does by itself)
        raise KeyboardInterrupt
    return session.last_info
