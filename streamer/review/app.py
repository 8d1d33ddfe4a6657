"""The review console's web application (Starlette, Jinja2 templates, htmx).

Every route except ``/login`` and ``/static`` needs a signed-in user: pages
redirect to ``/login``, everything else (POSTs, media, thumbnails, ``/api``)
answers 401.  Deciding needs the ``moderator`` role (403 otherwise).  Every
POST carries the session's CSRF token (a hidden form field or the
``X-CSRF-Token`` header) and is refused with 403 without it; the token lives in
the session, which Starlette signs with itsdangerous and keeps in a HttpOnly,
SameSite=Strict cookie (``Secure`` unless turned off for a local http demo).
Templates escape every value (Jinja2 autoescape), and the Content-Security-
Policy allows scripts from the console itself only, so an untrusted video id,
URI or error text is shown as text.

The metrics app (``/metrics``, ``/healthz``, ``/ready``) runs on its own port
without sign-in: it shows counts and ratios, never a video id.
"""

from __future__ import annotations

import logging
import mimetypes
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import anyio
import jinja2
from limits import parse as parse_rate
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from detectors.errors import MotionGuardError, SourceUnavailableError, VideoNotFoundError
from streamer.review.auth import ProxyAuth, User, UserStore
from streamer.review.evidence import Evidence, Thumbnail
from streamer.review.feed import LabelPublisher, QueueFeed
from streamer.review.metrics import ReviewMetrics
from streamer.review.queue import QueueFilter, QueueItem, ReviewError, ReviewQueue
from streamer.settings import ReviewSettings, WorkerSettings

logger = logging.getLogger(__name__)

HERE = Path(__file__).parent
SESSION_COOKIE = "motionguard_review"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; media-src 'self'; "
        "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}
DECISIONS = {"ai_generated": "AI-generated", "real": "Real", "cant_tell": "Can't tell"}


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Console:
    """Everything the routes share."""

    settings: ReviewSettings
    worker_settings: WorkerSettings
    queue: ReviewQueue
    users: UserStore
    proxy: ProxyAuth | None
    evidence: Evidence
    metrics: ReviewMetrics
    feed: QueueFeed | None = None
    publisher: LabelPublisher | None = None

    def __post_init__(self) -> None:
        self.limiter = MovingWindowRateLimiter(MemoryStorage())
        self.rate = parse_rate(self.settings.login_rate_limit)

    @property
    def ready(self) -> bool:
        return self.feed is not None and self.feed.caught_up.is_set()


def build_console(settings: ReviewSettings, worker_settings: WorkerSettings, registry: CollectorRegistry) -> Console:
    if len(settings.session_secret) < 32:
        raise ValueError("MOTIONGUARD_REVIEW_SESSION_SECRET must be set to at least 32 characters")
    if not settings.users_file and not settings.proxy_user_header:
        raise ValueError(
            "set MOTIONGUARD_REVIEW_USERS_FILE or MOTIONGUARD_REVIEW_PROXY_USER_HEADER: nobody could sign in"
        )
    return Console(
        settings=settings,
        worker_settings=worker_settings,
        queue=ReviewQueue(settings.audit_fraction, settings.claim_seconds),
        users=UserStore(Path(settings.users_file) if settings.users_file else None),
        proxy=ProxyAuth.create(
            settings.proxy_user_header,
            settings.proxy_groups_header,
            settings.proxy_moderator_group,
            settings.trusted_proxies,
        ),
        evidence=Evidence(worker_settings, settings.thumbnail_pixels),
        metrics=ReviewMetrics(registry),
    )


# --- templates ------------------------------------------------------------------------------


def _templates() -> Jinja2Templates:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,  # every value is escaped: video ids, URIs and error texts are untrusted
        undefined=jinja2.StrictUndefined,
    )
    env.filters["pct"] = lambda v: "\u2013" if v is None else f"{100 * v:.0f}%"
    env.filters["num"] = lambda v, digits=3: "\u2013" if v is None else f"{v:.{digits}f}"
    env.filters["when"] = lambda v: "\u2013" if v is None else v.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return Jinja2Templates(env=env)


TEMPLATES = _templates()


def timeline(verdict: dict[str, Any]) -> dict[str, Any]:
    """Segment bars and frame ticks in a 0-1000 x 0-100 box (SVG user units)."""
    segments = [s for s in verdict.get("segments") or [] if isinstance(s, dict)]
    ends = [float(s.get("end_seconds") or 0) for s in segments]
    duration = float(verdict.get("video_duration_seconds") or 0) or max(ends, default=0.0) or 1.0
    bars, ticks = [], []
    for segment in segments:
        start, end = float(segment.get("start_seconds") or 0), float(segment.get("end_seconds") or 0)
        score = min(1.0, max(0.0, float(segment.get("score") or 0)))
        bars.append(
            {
                "x": round(1000 * start / duration, 1),
                "width": max(2.0, round(1000 * (end - start) / duration, 1)),
                "y": round(100 - 100 * score, 1),
                "height": max(1.0, round(100 * score, 1)),
                "score": score,
                "start": start,
                "end": end,
                "level": "high" if score >= 0.6 else "mid" if score >= 0.4 else "low",
            }
        )
        for seconds in segment.get("frame_seconds") or []:
            ticks.append({"x": round(1000 * float(seconds) / duration, 1), "seconds": float(seconds), "score": score})
    return {"duration": duration, "bars": bars, "ticks": ticks}


def frame_score(verdict: dict[str, Any], seconds: float) -> tuple[str, float] | None:
    """What the model said of the frame at ``seconds``: ``("frame", p)`` from the verdict's
    per-frame probabilities (schema 3) when a scored frame lies within 20 ms, else
    ``("segment", score)`` of the segment it falls in, else ``None``."""
    for segment in verdict.get("segments") or []:
        times = segment.get("frame_seconds") or []
        probabilities = segment.get("frame_probabilities") or []
        for at, probability in zip(times, probabilities, strict=False):
            if abs(float(at) - seconds) <= 0.02:
                return "frame", float(probability)
    for segment in verdict.get("segments") or []:
        if float(segment.get("start_seconds") or 0) <= seconds <= float(segment.get("end_seconds") or 0):
            return "segment", float(segment.get("score") or 0)
    return None


# --- sign-in, CSRF ---------------------------------------------------------------------------


def console_of(request: Request) -> Console:
    console: Console = request.app.state.console
    return console


def current_user(request: Request) -> User | None:
    console = console_of(request)
    if console.proxy is not None:
        peer = request.client.host if request.client else None
        user = console.proxy.user(peer, {k.lower(): v for k, v in request.headers.items()})
        if user is not None:
            return user
    name = request.session.get("user")
    if not isinstance(name, str):
        return None
    role = console.users.role_of(name)
    return User(name=name, role=role) if role else None


def csrf_token(request: Request) -> str:
    token = request.session.get("csrf")
    if not isinstance(token, str):
        token = secrets.token_urlsafe(32)
        request.session["csrf"] = token
    return token


async def csrf_ok(request: Request) -> bool:
    expected = request.session.get("csrf")
    if not isinstance(expected, str):
        return False
    given = request.headers.get(CSRF_HEADER)
    if given is None:
        form = await request.form()
        value = form.get(CSRF_FIELD)
        given = value if isinstance(value, str) else None
    return given is not None and secrets.compare_digest(given.encode(), expected.encode())


Handler = Callable[[Request, User], Awaitable[Response]]


def page(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    """A GET page: signed-in users only, else a redirect to the sign-in page."""

    async def endpoint(request: Request) -> Response:
        user = current_user(request)
        if user is None:
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            return RedirectResponse("/login?" + urlencode({"next": target}), status_code=303)
        return await handler(request, user)

    return endpoint


def api(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    """Media, fragments and JSON: 401 without a user."""

    async def endpoint(request: Request) -> Response:
        user = current_user(request)
        if user is None:
            return PlainTextResponse("sign in first", status_code=401)
        return await handler(request, user)

    return endpoint


def action(handler: Handler, moderator: bool = True) -> Callable[[Request], Awaitable[Response]]:
    """A POST: a user (401), the CSRF token (403), and for decisions the moderator role (403)."""

    async def endpoint(request: Request) -> Response:
        user = current_user(request)
        if user is None:
            return PlainTextResponse("sign in first", status_code=401)
        if not await csrf_ok(request):
            return PlainTextResponse("missing or wrong CSRF token; reload the page", status_code=403)
        if moderator and not user.can_decide:
            return PlainTextResponse(f"{user.name} is a viewer: only moderators decide", status_code=403)
        if not console_of(request).ready:
            return PlainTextResponse("the console is still reading the topics; try again shortly", status_code=503)
        try:
            return await handler(request, user)
        except ReviewError as e:
            return render(request, user, "error.html", {"message": e.message}, status_code=e.status)

    return endpoint


def render(
    request: Request, user: User | None, template: str, context: dict[str, Any], status_code: int = 200
) -> Response:
    console = console_of(request)
    base = {"user": user, "csrf": csrf_token(request), "ready": console.ready, "decisions": DECISIONS}
    return TEMPLATES.TemplateResponse(request, template, {**base, **context}, status_code=status_code)


def redirect(request: Request, url: str) -> Response:
    """A 303 that htmx follows as a page load (HX-Location would keep the old URL otherwise)."""
    return RedirectResponse(url, status_code=303)


def safe_next(value: object) -> str:
    if isinstance(value, str) and value.startswith("/") and not value.startswith("//") and "\\" not in value:
        return value
    return "/"


async def login_page(request: Request) -> Response:
    return render(request, current_user(request), "login.html", {"next": safe_next(request.query_params.get("next"))})


async def login(request: Request) -> Response:
    console = console_of(request)
    form = await request.form()
    nxt = safe_next(form.get("next"))
    if not await csrf_ok(request):
        return render(request, None, "login.html", {"next": nxt, "error": "The form expired; try again."}, 403)
    name = str(form.get("username") or "").strip()[:64]
    password = str(form.get("password") or "")[:1024]
    peer = request.client.host if request.client else "unknown"
    allowed = console.limiter.hit(console.rate, "login-peer", peer)
    allowed = console.limiter.hit(console.rate, "login-user", name.lower()) and allowed
    if not allowed:
        console.metrics.sign_ins.labels(outcome="rate_limited").inc()
        return render(request, None, "login.html", {"next": nxt, "error": "Too many attempts; wait a minute."}, 429)
    user = await anyio.to_thread.run_sync(console.users.authenticate, name, password)
    if user is None:
        console.metrics.sign_ins.labels(outcome="failure").inc()
        return render(request, None, "login.html", {"next": nxt, "error": "Wrong user name or password."}, 401)
    console.metrics.sign_ins.labels(outcome="success").inc()
    request.session.clear()
    request.session["user"] = user.name
    request.session["csrf"] = secrets.token_urlsafe(32)
    logger.info("%s signed in (%s)", user.name, user.role)
    return redirect(request, nxt)


async def logout(request: Request) -> Response:
    if await csrf_ok(request):
        request.session.clear()
    return redirect(request, "/login")


# --- pages ------------------------------------------------------------------------------------


def filters_of(request: Request) -> QueueFilter:
    params = request.query_params
    return QueueFilter(
        policy=params.get("policy") or None,
        verdict=params.get("verdict") or None,
        model_version=params.get("model_version") or None,
    )


async def form_filters(request: Request) -> QueueFilter:
    form = await request.form()
    return QueueFilter(
        policy=str(form.get("policy") or "") or None,
        verdict=str(form.get("verdict") or "") or None,
        model_version=str(form.get("model_version") or "") or None,
    )


def filter_query(where: QueueFilter) -> str:
    values = {"policy": where.policy, "verdict": where.verdict, "model_version": where.model_version}
    return urlencode({k: v for k, v in values.items() if v})


def stats(console: Console, now: datetime) -> dict[str, Any]:
    return {"counts": console.queue.counts(now), "confusion": console.queue.confusion()}


async def queue_page(request: Request, user: User) -> Response:
    console = console_of(request)
    now = utc_now()
    where = filters_of(request)
    items = console.queue.items(now, ("open", "claimed"), where)
    return render(
        request,
        user,
        "queue.html",
        {
            "items": items,
            "now": now,
            "where": where,
            "choices": console.queue.choices(),
            "empty": request.query_params.get("empty") == "1",
            **stats(console, now),
        },
    )


async def item_page(request: Request, user: User) -> Response:
    console = console_of(request)
    now = utc_now()
    try:
        item = console.queue.get(request.path_params["key"])
    except ReviewError as e:
        return render(request, user, "error.html", {"message": e.message}, status_code=e.status)
    verdict = item.verdict
    model = verdict.get("model") if isinstance(verdict.get("model"), dict) else {}
    provenance = verdict.get("provenance") if isinstance(verdict.get("provenance"), dict) else {}
    mine = item.state(now) == "claimed" and item.claim is not None and item.claim.moderator == user.name
    return render(
        request,
        user,
        "item.html",
        {
            "item": item,
            "state": item.state(now),
            "mine": mine,
            "model": model,
            "provenance": provenance,
            "timeline": timeline(verdict),
            "generators": [g for g in verdict.get("generator") or [] if isinstance(g, dict)],
            "error": verdict.get("error") if isinstance(verdict.get("error"), dict) else None,
            "filters": filter_query(filters_of(request)),
            "where": filters_of(request),
        },
    )


async def audit_page(request: Request, user: User) -> Response:
    console = console_of(request)
    return render(request, user, "audit.html", {"entries": console.queue.audit_log()[:1000]})


async def item_thumbnails(request: Request) -> tuple[QueueItem, list[Thumbnail]]:
    """The item of the request's ``key`` and its frames, sampled again (in a worker thread)."""
    console = console_of(request)
    item = console.queue.get(request.path_params["key"])
    thumbs = await anyio.to_thread.run_sync(
        console.evidence.thumbnails,
        str(item.verdict.get("source") or ""),
        int(item.verdict.get("frames_scored") or 0),
    )
    return item, thumbs


async def thumbnails_fragment(request: Request, user: User) -> Response:
    try:
        item, thumbs = await item_thumbnails(request)
    except ReviewError as e:
        return PlainTextResponse(e.message, status_code=e.status)
    except MotionGuardError as e:
        return TEMPLATES.TemplateResponse(request, "thumbs.html", {"error": e.message, "thumbs": [], "item": None})
    shown = [
        {"index": i, "seconds": t.seconds, "score": frame_score(item.verdict, t.seconds)} for i, t in enumerate(thumbs)
    ]
    return TEMPLATES.TemplateResponse(request, "thumbs.html", {"error": None, "thumbs": shown, "item": item})


async def thumbnail(request: Request, user: User) -> Response:
    try:
        _, thumbs = await item_thumbnails(request)
    except ReviewError as e:
        return PlainTextResponse(e.message, status_code=e.status)
    except MotionGuardError as e:
        return PlainTextResponse(e.message, status_code=422)
    index = int(request.path_params["index"])
    if not 0 <= index < len(thumbs):
        return PlainTextResponse("no such frame", status_code=404)
    return Response(thumbs[index].jpeg, media_type="image/jpeg")


async def media(request: Request, user: User) -> Response:
    console = console_of(request)
    try:
        item = console.queue.get(request.path_params["key"])
        path = await anyio.to_thread.run_sync(console.evidence.local_path, str(item.verdict.get("source") or ""))
    except ReviewError as e:
        return PlainTextResponse(e.message, status_code=e.status)
    except VideoNotFoundError as e:
        return PlainTextResponse(e.message, status_code=404)
    except SourceUnavailableError as e:
        return PlainTextResponse(e.message, status_code=502)
    except MotionGuardError as e:
        return PlainTextResponse(f"refused: {e.message}", status_code=403)
    media_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return FileResponse(path, media_type=media_type, content_disposition_type="inline")


async def queue_api(request: Request, user: User) -> Response:
    console = console_of(request)
    now = utc_now()
    items = console.queue.items(now, ("open", "claimed", "decided"), filters_of(request))
    return JSONResponse(
        {
            "ready": console.ready,
            "counts": console.queue.counts(now),
            "items": [
                {
                    "key": i.key,
                    "video_id": i.video_id,
                    "verdict": i.verdict_label,
                    "origin": i.origin,
                    "state": i.state(now),
                    "claimed_by": i.claim.moderator if i.state(now) == "claimed" and i.claim else None,
                    "decision": i.decision.label if i.decision else None,
                }
                for i in items
            ],
        }
    )


# --- actions ----------------------------------------------------------------------------------


async def next_item(request: Request, user: User) -> Response:
    console = console_of(request)
    where = await form_filters(request)
    item = console.queue.claim_next(user.name, utc_now(), where)
    return redirect(request, item_url(item, where) if item else "/?empty=1&" + filter_query(where))


def item_url(item: QueueItem, where: QueueFilter) -> str:
    query = filter_query(where)
    return f"/item/{item.key}" + (f"?{query}" if query else "")


async def claim(request: Request, user: User) -> Response:
    console = console_of(request)
    item = console.queue.claim_item(request.path_params["key"], user.name, utc_now())
    return redirect(request, item_url(item, await form_filters(request)))


async def release(request: Request, user: User) -> Response:
    console = console_of(request)
    console.queue.release(request.path_params["key"], user.name, utc_now())
    return redirect(request, "/?" + filter_query(await form_filters(request)))


async def decide(request: Request, user: User) -> Response:
    console = console_of(request)
    form = await request.form()
    key = request.path_params["key"]
    note = str(form.get("note") or "")
    item, event = console.queue.decide(key, user.name, str(form.get("decision") or ""), note, utc_now())
    assert console.publisher is not None
    try:
        await console.publisher.publish(event)
    except Exception as e:  # any broker failure: the decision is not recorded, so reopen the item
        console.queue.undo_decision(key, user.name, utc_now())
        logger.error("could not publish the decision on %s: %s", item.video_id, e)
        raise ReviewError("the decision could not be saved (Kafka did not acknowledge it); try again", 503) from e
    console.metrics.decisions.labels(label=event.label).inc()
    logger.info("%s decided %s on %s (answering %s)", user.name, event.label, item.video_id, event.answers)
    where = await form_filters(request)
    following = console.queue.claim_next(user.name, utc_now(), where)
    return redirect(request, item_url(following, where) if following else "/?empty=1&" + filter_query(where))


# --- application ------------------------------------------------------------------------------


class SecurityHeaders(BaseHTTPMiddleware):
    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        response = await call_next(request)
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response


def create_app(console: Console, connect: bool = True) -> Starlette:
    """The console's web app; ``connect`` starts the Kafka feed and publisher with the app."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if connect:
            console.feed = QueueFeed(console.worker_settings, console.queue)
            console.publisher = LabelPublisher(console.worker_settings)
            await console.publisher.start()
            await console.feed.start()
        try:
            yield
        finally:
            if console.feed is not None:
                await console.feed.stop()
            if console.publisher is not None:
                await console.publisher.stop()

    routes = [
        Route("/login", login_page, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/", page(queue_page), methods=["GET"]),
        Route("/audit", page(audit_page), methods=["GET"]),
        Route("/item/{key:str}", page(item_page), methods=["GET"]),
        Route("/item/{key:str}/thumbs", api(thumbnails_fragment), methods=["GET"]),
        Route("/item/{key:str}/thumb/{index:int}.jpg", api(thumbnail), methods=["GET"]),
        Route("/media/{key:str}", api(media), methods=["GET"]),
        Route("/api/queue", api(queue_api), methods=["GET"]),
        Route("/next", action(next_item), methods=["POST"]),
        Route("/item/{key:str}/claim", action(claim), methods=["POST"]),
        Route("/item/{key:str}/release", action(release), methods=["POST"]),
        Route("/item/{key:str}/decide", action(decide), methods=["POST"]),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    middleware = [
        Middleware(SecurityHeaders),
        Middleware(
            SessionMiddleware,
            secret_key=console.settings.session_secret,
            session_cookie=SESSION_COOKIE,
            max_age=int(console.settings.session_hours * 3600),
            same_site="strict",
            https_only=console.settings.cookie_secure,
        ),
    ]
    app = Starlette(routes=routes, middleware=middleware, lifespan=lifespan)
    app.state.console = console
    return app


def create_metrics_app(console: Console) -> Starlette:
    async def metrics(request: Request) -> Response:
        console.metrics.refresh(console.queue, utc_now())
        return Response(generate_latest(console.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok")

    async def ready(request: Request) -> Response:
        if console.ready:
            return PlainTextResponse("ready")
        return PlainTextResponse("reading the verdicts and labels topics", status_code=503)

    return Starlette(routes=[Route("/metrics", metrics), Route("/healthz", healthz), Route("/ready", ready)])


async def serve(console: Console) -> None:
    """Run the console and its metrics app until cancelled (SIGINT/SIGTERM)."""
    import uvicorn

    settings = console.settings
    servers = [
        uvicorn.Server(
            uvicorn.Config(
                create_app(console), host=settings.host, port=settings.port, proxy_headers=False,
                server_header=False, log_config=None,
            )
        )
    ]  # fmt: skip
    if settings.metrics_port:
        servers.append(
            uvicorn.Server(
                uvicorn.Config(
                    create_metrics_app(console), host=settings.host, port=settings.metrics_port, proxy_headers=False,
                    server_header=False, log_config=None, lifespan="off",
                )
            )
        )  # fmt: skip

    async def stop_together() -> None:
        # uvicorn's signal handler reaches whichever server installed it last: stop them all together.
        while not any(server.should_exit for server in servers):
            await anyio.sleep(0.2)
        for server in servers:
            server.should_exit = True

    async with anyio.create_task_group() as group:
        for server in servers:
            group.start_soon(server.serve)
        await stop_together()
