"""The review page's web server: a Starlette app behind the Guard, run by uvicorn on a loopback socket.

Routes (all behind the token and Host checks of datakit.review.guard):
    GET  /                  the page (plain HTML, JS and CSS shipped in datakit/review/static/)
    GET  /static/NAME       one of those files (a fixed list: no path from the request reaches the disk)
    GET  /api/state         items, their decisions and facts, the dataset's tags
    GET  /api/thumb/N       item N's thumbnail; /api/image/N its large view (items by index only)
    POST /api/decide        {"changes": [{"key", "action"?, "tags"?, "add"?, "remove"?, "note"?}, ...]}
    POST /api/hole          {"key", "number", "action": "cut" | "keep" | null}  (writes OUT/holes.toml)
    POST /api/save          write OUT;  POST /api/finish  save and end the session
"""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass
from importlib import resources
from typing import Callable

from datakit.errors import DatakitError, ImageError, UsageError
from datakit.review.guard import BodyTooLarge, Guard, allowed_hosts, new_token
from datakit.review.images import Pictures
from datakit.review.session import ReviewSession

ASSETS = {"review.js": "text/javascript; charset=utf-8", "review.css": "text/css; charset=utf-8"}
PAGE = "review.html"
TOKEN_MARK = "__REVIEW_TOKEN__"


def asset(name: str) -> bytes:
    """A file shipped in datakit/review/static/."""
    return resources.files("datakit.review").joinpath("static", name).read_bytes()


def summary_of(info: dict | None) -> dict | None:
    """What the page shows after a save: counts, the review's own counts, and where OUT is."""
    if not info:
        return None
    return {"counts": info.get("counts", {}), "review": info.get("review", {}), "output": info.get("output"),
            "nothing_to_do": bool(info.get("nothing_to_do"))}


def create_app(session: ReviewSession, pictures: Pictures, *, token: str, hosts: set[str], on_finish: Callable[[], None]):
    """The ASGI app for one session: Starlette routes wrapped in the Guard."""
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    page = asset(PAGE).decode("utf-8").replace(TOKEN_MARK, token)  # the token is URL-safe base64: no escaping needed
    picture_headers = {"cache-control": "private, max-age=3600"}

    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status)

    async def body_of(request: Request) -> dict:
        try:
            data = json.loads(await request.body())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise UsageError(f"the request is not valid JSON ({exc})") from exc
        if not isinstance(data, dict):
            raise UsageError("the request must be a JSON object")
        return data

    def item_at(request: Request):
        index = request.path_params["index"]
        if not 0 <= index < len(session.items):
            return None
        return session.items[index]

    async def index(request: Request) -> Response:
        return Response(page, media_type="text/html; charset=utf-8")

    async def static(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in ASSETS:
            return Response("not found\n", status_code=404, media_type="text/plain")
        return Response(asset(name), media_type=ASSETS[name])

    async def state(request: Request) -> Response:
        data = await run_in_threadpool(session.state)
        data["last_save"] = summary_of(session.last_info)
        return JSONResponse(data)

    def picture(kind: str):
        async def endpoint(request: Request) -> Response:
            item = item_at(request)
            if item is None:
                return Response("no such item\n", status_code=404, media_type="text/plain")
            try:
                if kind == "thumb":
                    data, media = await run_in_threadpool(pictures.thumbnail, item.path, item.hash)
                else:
                    data, media = await run_in_threadpool(pictures.large, item.path)
            except UsageError as exc:  # the file now leads out of IN
                return Response(f"{exc}\n", status_code=403, media_type="text/plain")
            except (ImageError, OSError) as exc:
                return Response(f"cannot show {item.name}: {exc}\n", status_code=422, media_type="text/plain")
            return Response(data, media_type=media, headers=picture_headers)

        return endpoint

    async def decide(request: Request) -> Response:
        data = await body_of(request)
        items = await run_in_threadpool(session.apply, data.get("changes"))
        return JSONResponse({"items": items, "unsaved": session.changes})

    async def hole(request: Request) -> Response:
        data = await body_of(request)
        item = await run_in_threadpool(session.decide_hole, data.get("key"), data.get("number"), data.get("action"))
        return JSONResponse({"items": [item], "unsaved": session.changes, "holes_file": session.holes_file})

    async def save(request: Request) -> Response:
        await body_of(request)
        info = await run_in_threadpool(session.save)
        return JSONResponse({"saved": True, "summary": summary_of(info), "unsaved": 0})

    async def finish(request: Request) -> Response:
        await body_of(request)
        info = await run_in_threadpool(session.save) if (session.changes or not session.saves) else session.last_info
        session.finished.set()
        on_finish()
        return JSONResponse({"saved": True, "finished": True, "summary": summary_of(info), "unsaved": 0})

    async def on_usage(request: Request, exc: Exception) -> Response:
        return error(400, str(exc))

    async def on_datakit(request: Request, exc: Exception) -> Response:
        return error(500, str(exc))

    async def on_too_large(request: Request, exc: Exception) -> Response:
        return error(413, "request body too large")

    routes = [
        Route("/", index, methods=["GET"]),
        Route("/static/{name}", static, methods=["GET"]),
        Route("/api/state", state, methods=["GET"]),
        Route("/api/thumb/{index:int}", picture("thumb"), methods=["GET"]),
        Route("/api/image/{index:int}", picture("image"), methods=["GET"]),
        Route("/api/decide", decide, methods=["POST"]),
        Route("/api/hole", hole, methods=["POST"]),
        Route("/api/save", save, methods=["POST"]),
        Route("/api/finish", finish, methods=["POST"]),
    ]
    handlers = {UsageError: on_usage, DatakitError: on_datakit, BodyTooLarge: on_too_large}
    app = Starlette(routes=routes, exception_handlers=handlers)
    return Guard(app, token=token, hosts=hosts)


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port (port 0: any free port); UsageError when it cannot be had."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host.strip("[]"), port))
        sock.listen(128)  # connections wait in the backlog until uvicorn accepts them: the address works at once
    except OSError as exc:
        sock.close()
        raise UsageError(f"cannot listen on {host}:{port} ({exc.strerror or exc})") from exc
    sock.set_inheritable(True)
    return sock


@dataclass
class Running:
    """A server that is listening: its address (with the token) and how to stop it."""

    url: str
    token: str
    port: int
    server: object  # uvicorn.Server
    socket: socket.socket  # the listening socket
    def stop(self) -> None:
        self.server.should_exit = True


def url_for(host: str, port: int, token: str) -> str:
    shown = f"[{host}]" if ":" in host and not host.startswith("[") else host
    return f"http://{shown}:{port}/?token={token}"


def serve(session: ReviewSession, pictures: Pictures, *, host: str, port: int,
          on_ready: Callable[[Running], None]) -> None:
    """Listen on host:port and serve the session until it is finished (the page) or interrupted (Ctrl-C).

    Runs in the calling thread; `on_ready` is called once the socket listens, before serving starts.
    """
    import uvicorn

    sock = bind(host, port)
    real_port = sock.getsockname()[1]
    token = new_token()
    holder: dict = {}
    app = create_app(session, pictures, token=token, hosts=allowed_hosts(host, real_port),
                     on_finish=lambda: holder["running"].stop())
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off", server_header=False,
                            timeout_graceful_shutdown=3)
    server = uvicorn.Server(config)
    running = Running(url=url_for(host, real_port, token), token=token, port=real_port, server=server, socket=sock)
    holder["running"] = running
    try:
        on_ready(running)
        server.run(sockets=[sock])
    finally:
        sock.close()
