"""The review server's safety, each point against the real server (uvicorn on a loopback socket):
loopback only, the token on every request (constant-time), the Host header (DNS rebinding), writes
only as JSON with the token in a header (CSRF), only the manifest's files (no traversal, no symlinks
out of IN), and writes only into OUT, atomically."""

from __future__ import annotations

import http.client
import json
import os
import socket
from pathlib import Path

import pytest

from datakit.review import guard
from review_support import manifest_rows, plain_folder, serve_in_thread, snapshot


@pytest.fixture
def served(tmp_path):
    src = plain_folder(tmp_path / "in")
    s = serve_in_thread(src, tmp_path / "out")
    s.src, s.out = src, tmp_path / "out"
    yield s
    s.stop()


def call(s, method: str, path: str, *, body=None, token: str | None = "header", host: str | None = None,
         ctype: str | None = "application/json", headers: dict | None = None):
    """One raw HTTP request -> (status, headers, body bytes)."""
    conn = http.client.HTTPConnection("127.0.0.1", s.port, timeout=30)
    h = {"Host": host if host is not None else f"127.0.0.1:{s.port}"}
    if token == "header":
        h["X-Review-Token"] = s.token
    elif token == "query":
        path += ("&" if "?" in path else "?") + f"token={s.token}"
    elif token is not None:
        h["X-Review-Token"] = token
    data = None
    if body is not None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        if ctype:
            h["Content-Type"] = ctype
    h.update(headers or {})
    conn.request(method, path, body=data, headers=h)
    r = conn.getresponse()
    out = (r.status, {k.lower(): v for k, v in r.getheaders()}, r.read())
    conn.close()
    return out


def test_listens_on_loopback_only_by_default(served):
    assert served.url.startswith(f"http://127.0.0.1:{served.port}/?token=")
    assert served.running.socket.getsockname()[0] == "127.0.0.1"


def test_every_request_needs_the_token(served):
    for path in ("/", "/api/state", "/static/review.js", "/api/thumb/0", "/api/image/0"):
        assert call(served, "GET", path, token=None)[0] == 403, path
        assert call(served, "GET", path, token="x" * len(served.token))[0] == 403, path
        near = served.token[:-1] + ("A" if served.token[-1] != "A" else "B")
        assert call(served, "GET", path, token=near)[0] == 403, path
        assert call(served, "GET", path, token="query")[0] == 200, path
        assert call(served, "GET", path, token="header")[0] == 200, path
    status, _, body = call(served, "GET", "/", token=None)
    assert b"token" in body and b"<html" not in body  # not even the page


def test_tokens_are_compared_in_constant_time(served, monkeypatch):
    seen = []
    real = guard.secrets.compare_digest

    def spy(a, b):
        seen.append((a, b))
        return real(a, b)

    monkeypatch.setattr(guard.secrets, "compare_digest", spy)
    assert call(served, "GET", "/api/state", token="wrong")[0] == 403
    assert call(served, "GET", "/api/state")[0] == 200
    assert (b"wrong", served.token.encode()) in seen and (served.token.encode(), served.token.encode()) in seen
    assert not guard.same_token("ünïcode", served.token) and not guard.same_token(None, served.token)
    assert len(served.token) >= 40 and served.token != guard.new_token()  # 32 random bytes, new each session


def test_host_header_is_checked_against_dns_rebinding(served):
    port = served.port
    for host in (f"evil.example:{port}", "evil.example", f"127.0.0.1:{port + 1}", "localhost", f"127.0.0.1.evil.example:{port}"):
        assert call(served, "GET", "/api/state", host=host)[0] == 403, host
        assert call(served, "POST", "/api/save", body={}, host=host)[0] == 403, host
    assert call(served, "GET", "/api/state", host=f"localhost:{port}")[0] == 200
    assert call(served, "GET", "/api/state", host=f"LOCALHOST:{port}")[0] == 200


def test_writes_need_the_token_header_and_json(served):
    change = {"changes": [{"key": "item01.jpg", "action": "reject"}]}
    assert call(served, "POST", "/api/decide", body=change, token="query")[0] == 403  # token in the address only
    assert call(served, "POST", "/api/decide", body=change, token=None)[0] == 403
    assert call(served, "POST", "/api/decide", body=change, ctype="text/plain")[0] == 415
    assert call(served, "POST", "/api/decide", body=b"changes=1", ctype="application/x-www-form-urlencoded")[0] == 415
    assert call(served, "POST", "/api/decide", body=change, ctype="multipart/form-data; boundary=x")[0] == 415
    assert call(served, "POST", "/api/decide", body=change, headers={"Origin": "http://evil.example"})[0] == 403
    assert call(served, "POST", "/api/decide", body=change, headers={"Sec-Fetch-Site": "cross-site"})[0] == 403
    assert call(served, "OPTIONS", "/api/decide", token=None, headers={"Origin": "http://evil.example"})[0] == 403
    state = json.loads(call(served, "GET", "/api/state")[2])
    assert all(i["action"] is None for i in state["items"])  # none of the above got through
    ok = call(served, "POST", "/api/decide", body=change, headers={"Origin": f"http://127.0.0.1:{served.port}",
                                                                    "Sec-Fetch-Site": "same-origin"})
    assert ok[0] == 200 and json.loads(ok[2])["items"][0]["action"] == "reject"
    huge = {"changes": [{"key": "item01.jpg", "note": "x" * (guard.MAX_BODY + 10)}]}
    assert call(served, "POST", "/api/decide", body=huge)[0] == 413


def test_bad_changes_are_refused_whole(served):
    status, _, body = call(served, "POST", "/api/decide", body=b"{not json")
    assert status == 400 and "not valid JSON" in json.loads(body)["error"]
    bad = {"changes": [{"key": "item00.png", "action": "reject"}, {"key": "../../etc/passwd", "action": "reject"}]}
    status, _, body = call(served, "POST", "/api/decide", body=bad)
    assert status == 400 and "no item" in json.loads(body)["error"]
    bad = {"changes": [{"key": "item00.png", "tags": ["ok", "two, tags"]}]}
    assert call(served, "POST", "/api/decide", body=bad)[0] == 400
    state = json.loads(call(served, "GET", "/api/state")[2])
    assert all(i["action"] is None and not i["edited"] for i in state["items"])  # nothing of a refused list applied


def test_every_answer_carries_the_security_headers(served):
    for path in ("/", "/api/state", "/api/thumb/0"):
        _, headers, _ = call(served, "GET", path)
        assert "default-src 'none'" in headers["content-security-policy"] and "frame-ancestors 'none'" in headers["content-security-policy"]
        assert headers["x-content-type-options"] == "nosniff" and headers["referrer-policy"] == "no-referrer"
        assert headers["x-frame-options"] == "DENY"
    assert call(served, "GET", "/", token=None)[1]["x-frame-options"] == "DENY"  # refusals too


def test_only_the_items_files_are_served(served):
    n = len(json.loads(call(served, "GET", "/api/state")[2])["items"])
    for path in (f"/api/image/{n}", "/api/thumb/-1", "/api/image/0/../../datakit.json", "/static/review.html",
                 "/static/../manifest.jsonl", "/static/..%2f..%2fpyproject.toml", "/static/%2e%2e/review.py",
                 "/item00.png", "/in/item00.png", "/api/file?path=/etc/passwd"):
        status = call(served, "GET", path)[0]
        assert status in (404, 405), (path, status)
    status, headers, body = call(served, "GET", "/api/image/0")
    assert status == 200 and headers["content-type"] == "image/png" and body == (served.src / "item00.png").read_bytes()


def test_symlinks_out_of_in_are_never_followed(tmp_path):
    outside = tmp_path / "secret"
    outside.mkdir()
    plain_folder(outside, n=1)
    src = plain_folder(tmp_path / "in", n=3)
    (src / "link.png").symlink_to(outside / "item00.png")
    s = serve_in_thread(src, tmp_path / "out")
    try:
        state = json.loads(call(s, "GET", "/api/state")[2])
        assert "link.png" not in [i["key"] for i in state["items"]]
        assert any(x["source"] == "link.png" and "not followed" in x["reason"] for x in state["skipped"])
        # an item swapped for a symlink out of IN after the start is refused too
        victim = src / "item00.png"
        victim.unlink()
        victim.symlink_to(outside / "item00.png")
        assert call(s, "GET", "/api/image/0")[0] == 403
        assert call(s, "GET", "/api/thumb/0")[0] == 403
    finally:
        s.stop()


def test_a_manifest_naming_files_outside_in_is_not_followed(tmp_path):
    from datakit.inputs import discover
    from datakit.review.items import collect

    (tmp_path / "secret.png").write_bytes((plain_folder(tmp_path / "x", n=1) / "item00.png").read_bytes())
    src = plain_folder(tmp_path / "in", n=2)
    rows = [{"file": "item00.png", "key": "item00.png", "status": "ok"}, {"file": "../secret.png", "key": "s", "status": "ok"},
            {"file": str(tmp_path / "secret.png"), "key": "abs", "status": "ok"}]
    (src / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (src / "datakit.json").write_text(json.dumps({"stage": "tag", "stages": ["tag"]}))
    review = collect(discover(src))
    assert [i.key for i in review.items] == ["item00.png"]
    assert {x["source"] for x in review.skipped} >= {"../secret.png", str(tmp_path / "secret.png")}


def test_saving_writes_only_into_out_atomically(tmp_path):
    src = plain_folder(tmp_path / "in")
    (tmp_path / "beside.txt").write_text("untouched")
    before = snapshot(tmp_path)
    out = tmp_path / "out"
    s = serve_in_thread(src, out)
    try:
        assert call(s, "POST", "/api/decide", body={"changes": [{"key": "item02.png", "action": "reject"},
                                                               {"key": "item00.png", "tags": ["sail kun", "beach"]}]})[0] == 200
        assert (out / ".review-draft.json").is_file() and not (out / "datakit.json").exists()
        status, _, body = call(s, "POST", "/api/finish", body={})
        assert status == 200 and json.loads(body)["summary"]["review"]["rejected"] == 1
        s.thread.join(30)
    finally:
        s.stop()
    assert s.result["info"]["review"]["edited"] == 1
    after = snapshot(tmp_path)
    changed = {p for p in set(before) | set(after) if before.get(p) != after.get(p)}
    assert changed and all(p.startswith("out/") for p in changed), sorted(changed)
    assert not [p for p in out.iterdir() if ".tmp-" in p.name] and not (out / ".review-draft.json").exists()
    assert (out / "item00.txt").read_text() == "sail kun, beach\n"
    assert [r["key"] for r in manifest_rows(out) if r["status"] == "rejected"] == ["item02.png"]


def test_a_session_stopped_without_saving_comes_back_from_its_draft(tmp_path):
    src = plain_folder(tmp_path / "in")
    out = tmp_path / "out"
    s = serve_in_thread(src, out)
    call(s, "POST", "/api/decide", body={"changes": [{"key": "item03.png", "action": "reject", "note": "too small"}]})
    s.stop()
    assert isinstance(s.result.get("error"), KeyboardInterrupt)  # Ctrl-C without Save: exit 130, OUT not written
    assert not (out / "datakit.json").exists() and (out / ".review-draft.json").is_file()
    again = serve_in_thread(src, out)
    try:
        items = {i["key"]: i for i in json.loads(call(again, "GET", "/api/state")[2])["items"]}
        assert items["item03.png"]["action"] == "reject" and items["item03.png"]["note"] == "too small"
    finally:
        again.stop()


def test_a_port_in_use_is_one_clear_error(tmp_path):
    from datakit.errors import UsageError
    from datakit.review.server import bind

    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    try:
        with pytest.raises(UsageError, match="cannot listen on 127.0.0.1"):
            bind("127.0.0.1", busy.getsockname()[1])
    finally:
        busy.close()


def test_one_session_per_out_and_ctrl_c_keeps_the_draft(tmp_path):
    import signal
    import subprocess
    import sys

    from review_support import ROOT, Review

    src = plain_folder(tmp_path / "in", n=3)
    out = tmp_path / "out"
    first = Review(src, out)
    try:
        port = int(first.url.split(":")[2].split("/")[0])
        token = first.url.split("token=")[1]

        class S:  # what call() needs
            pass

        s = S()
        s.port, s.token = port, token
        assert call(s, "POST", "/api/decide", body={"changes": [{"key": "item01.jpg", "action": "reject"}]})[0] == 200
        # a second run on the same OUT (any mode) is refused while the page is open, naming the first
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        second = subprocess.run([sys.executable, "-m", "datakit", "review", str(src), str(out), "--accept-all"],
                                capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
        assert second.returncode == 2 and "in use by another datakit run" in second.stderr, second.stderr
        first.proc.send_signal(signal.SIGINT)
        code, _, err = first.wait()
    finally:
        first.kill()
    assert code == 130, err
    assert "1 change(s) not saved" in err and ".review-draft.json" in err
    assert not (out / "datakit.json").exists() and (out / ".review-draft.json").is_file()


def test_the_page_works_offline_no_outside_address_no_inline_script():
    import re
    from importlib import resources

    static = resources.files("datakit.review").joinpath("static")
    names = sorted(p.name for p in static.iterdir())
    assert names == ["review.css", "review.html", "review.js"]
    for name in names:
        text = static.joinpath(name).read_text(encoding="utf-8")
        urls = set(re.findall(r"(?:https?:)?//[\w.-]+\.[a-z]{2,}[^\s\"')]*", text))
        assert urls <= {"http://www.w3.org/2000/svg"}, (name, urls)  # the SVG namespace is a name, not a fetch
        assert "@import" not in text and "fetch(\"http" not in text
    html = static.joinpath("review.html").read_text(encoding="utf-8")
    assert re.findall(r"<script[^>]*>([^<]+)</script>", html) == []  # no inline script (the CSP forbids it anyway)
    assert ' style="' not in html and " on" + "click=" not in html
