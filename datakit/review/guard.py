"""The review server's gate: every request must name our host and carry the session's token.

- Host: only `127.0.0.1:PORT`, `localhost:PORT` (and `[::1]:PORT`, or the address given with
  `--host`). A page on another site that rebinds its DNS name to 127.0.0.1 still sends its own
  name as Host, and is refused (DNS rebinding).
- Token: a random 32-byte token, in the address the stage prints (`?token=`) or in the
  `X-Review-Token` header, compared in constant time. Without it nothing is served, not even the page.
- Writes (any method but GET/HEAD) must carry the token in the header and a JSON body
  (`Content-Type: application/json`): neither a form nor a plain `fetch` from another site can send
  both without a CORS preflight, which is refused. An `Origin` or `Sec-Fetch-Site` header naming
  another site is refused too. Bodies are capped.
- Every answer says: no framing, no sniffing, no referrer, no caching (but for images), scripts and
  styles from this server only.
"""

from __future__ import annotations

import secrets
from urllib.parse import parse_qs

TOKEN_HEADER = "x-review-token"
MAX_BODY = 4 * 1024 * 1024
SAFE_METHODS = ("GET", "HEAD")
SECURITY_HEADERS = [
    (b"content-security-policy",
     b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
     b"base-uri 'none'; form-action 'none'; frame-ancestors 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-resource-policy", b"same-origin"),
    (b"cross-origin-opener-policy", b"same-origin"),
]


def new_token() -> str:
    """A fresh random token for one session (URL-safe)."""
    return secrets.token_urlsafe(32)


def allowed_hosts(host: str, port: int) -> set[str]:
    """The Host header values this server answers to (lower case, with the port)."""
    names = {f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}"}
    if ":" in host and not host.startswith("["):
        names.add(f"[{host.lower()}]:{port}")
    else:
        names.add(f"{host.lower()}:{port}")
    return names


def _headers(scope) -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in scope.get("headers") or []:
        name = k.decode("latin-1").lower()
        if name in out:  # two Host (or token) headers: ambiguous, treat as bad
            out[name] = "\x00duplicate"
        else:
            out[name] = v.decode("latin-1")
    return out


def same_token(given: str | None, token: str) -> bool:
    """Constant-time comparison (of bytes: compare_digest refuses non-ASCII str)."""
    if not given:
        return False
    return secrets.compare_digest(given.encode("utf-8", "surrogateescape"), token.encode("ascii"))


class Guard:
    """ASGI middleware: refuse any request that is not from our own page (see the module's docstring)."""

    def __init__(self, app, *, token: str, hosts: set[str], max_body: int = MAX_BODY):
        self.app = app
        self.token = token
        self.hosts = {h.lower() for h in hosts}
        self.origins = {f"http://{h}" for h in self.hosts}
        self.max_body = max_body

    async def __call__(self, scope, receive, send):
        if scope["type"] == "lifespan":
            return await self.app(scope, receive, send)
        if scope["type"] != "http":  # websockets: none here
            if scope["type"] == "websocket":
                await receive()
                await send({"type": "websocket.close", "code": 1008})
            return
        problem, status = self.check(scope)
        if problem:
            return await _deny(send, status, problem)
        return await self.app(scope, self._capped(receive, send), _with_headers(send))

    def check(self, scope) -> tuple[str | None, int]:
        """(why the request is refused, HTTP status), or (None, 200) when it may pass."""
        headers = _headers(scope)
        host = headers.get("host", "").lower()
        if host not in self.hosts:
            return "unknown Host: this server answers only to its own loopback address", 403
        method = scope.get("method", "GET")
        header_token = headers.get(TOKEN_HEADER)
        if method in SAFE_METHODS:
            query = parse_qs(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
            given = header_token or (query.get("token") or [None])[-1]
            if not same_token(given, self.token):
                return "missing or wrong token: open the address datakit review printed", 403
            return None, 200
        if not same_token(header_token, self.token):
            return "a write must carry the token in the X-Review-Token header", 403
        ctype = headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if ctype != "application/json":
            return "a write must be JSON (Content-Type: application/json)", 415
        origin = headers.get("origin")
        if origin is not None and origin.lower() not in self.origins:
            return "cross-site request refused", 403
        site = headers.get("sec-fetch-site")
        if site is not None and site not in ("same-origin", "none"):
            return "cross-site request refused", 403
        length = headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body):
            return f"request body too large (at most {self.max_body} bytes)", 413
        return None, 200

    def _capped(self, receive, send):
        """`receive` that stops a body (chunked ones too) at max_body bytes."""
        seen = 0
        limit = self.max_body

        async def capped():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge()
            return message

        return capped


class BodyTooLarge(Exception):
    """A request body passed the cap while it was read."""


def _with_headers(send):
    async def wrapped(message):
        if message["type"] == "http.response.start":
            headers = list(message.get("headers", []))
            names = {k.lower() for k, _ in headers}
            headers += [(k, v) for k, v in SECURITY_HEADERS if k not in names]
            if b"cache-control" not in names:
                headers.append((b"cache-control", b"no-store"))
            message = dict(message, headers=headers)
        await send(message)

    return wrapped


async def _deny(send, status: int, text: str) -> None:
    body = (text + "\n").encode("utf-8")
    headers = [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode()),
               (b"cache-control", b"no-store"), *SECURITY_HEADERS]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
