"""Security defaults: the stats password, the browser cookie, and what the API reveals."""

from __future__ import annotations

import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

import app as entry

pytestmark = pytest.mark.usefixtures("fresh_shared_manager")


def client(*routes: Route) -> TestClient:
    async def page(request):
        return PlainTextResponse("page")

    return TestClient(Starlette(routes=[Route("/", page), *routes],
                                middleware=[Middleware(entry.BrowserIdCookie)]))


class TestStatsApi:
    def test_it_serves_aggregates_without_a_password_by_default(self):
        response = client(Route("/api/stats.json", entry.stats_json)).get("/api/stats.json")
        assert response.status_code == 200
        assert response.json()["agent_pool_size"] == 1
        assert response.headers["cache-control"] == "no-store"

    def test_a_stats_password_is_required_as_a_bearer_token(self, monkeypatch, caplog):
        monkeypatch.setenv("STATS_PASSWORD", "s3cret-pass")
        api = client(Route("/api/stats.json", entry.stats_json))
        assert api.get("/api/stats.json").status_code == 401
        wrong = api.get("/api/stats.json", headers={"Authorization": "Bearer nope-guess"})
        assert wrong.status_code == 401 and "s3cret-pass" not in wrong.text
        assert "stats API: a wrong bearer token" in caplog.text  # guessing shows
        assert "nope-guess" not in caplog.text
        right = api.get("/api/stats.json", headers={"Authorization": "Bearer s3cret-pass"})
        assert right.status_code == 200 and "total_sessions" in right.json()

    def test_token_guessing_is_refused_for_a_while_with_retry_after(self, monkeypatch):
        from core.auth import GUESS_BURST

        monkeypatch.setenv("STATS_PASSWORD", "s3cret-pass")
        api = client(Route("/api/stats.json", entry.stats_json))
        for guess in range(GUESS_BURST):
            assert api.get("/api/stats.json", headers={
                "Authorization": f"Bearer guess-{guess}"}).status_code == 401
        refused = api.get("/api/stats.json", headers={"Authorization": "Bearer s3cret-pass"})
        # 3 s until the next guess, less the time the guesses took (over 1 s under load)
        assert refused.status_code == 429 and 1 <= int(refused.headers["retry-after"]) <= 3


class TestStopApi:
    def test_only_a_browser_with_its_cookie_is_heard_and_an_unknown_run_stops_nothing(self):
        api = client(Route("/api/stop", entry.stop_run, methods=["POST"]))
        assert api.post("/api/stop", content="x" * 24).status_code == 403  # no cookie yet
        api.get("/")  # the browser gets its cookie
        assert api.post("/api/stop", content="x" * 24).status_code == 404
        assert api.post("/api/stop", content="x" * 10_000).status_code == 404
        assert api.get("/api/stop").status_code == 405


    def test_the_browser_whose_chat_it_is_stops_its_reply(self, monkeypatch):
        from core.runtime import shared_manager
        from core.store import STOPPED

        monkeypatch.setenv("OFFLINE_STREAM_DELAY", "0.5")  # a reply of ~20 s
        api = client(Route("/api/stop", entry.stop_run, methods=["POST"]))
        api.get("/")
        owner = api.cookies["poolchat_browser"]
        manager = shared_manager(entry.load_app_settings)
        run = manager.create_session(owner=owner).start("Tell me about yourself")
        stranger = client(Route("/api/stop", entry.stop_run, methods=["POST"]))
        stranger.get("/")
        assert stranger.post("/api/stop", content=run.id).status_code == 404  # not theirs
        assert api.post("/api/stop", content=run.id).status_code == 204
        assert run.wait(10) and run.status == STOPPED

    def test_behind_a_base_path_the_api_answers_under_it_too(self, monkeypatch):
        """The page's Stop request posts to a relative ``api/stop``: behind
        ``server.baseUrlPath`` that is ``/<base>/api/stop`` (st.App mounts routes at
        the root only; there it got Streamlit's 405)."""
        monkeypatch.setattr(entry.st, "get_option", lambda name: {
            "server.baseUrlPath": "/poolchat/"}.get(name, ""))
        api = client(*entry.api_routes())
        assert api.post("/poolchat/api/stop", content="x" * 24).status_code == 403
        assert api.get("/poolchat/api/stats.json").json()["agent_pool_size"] == 1
        assert api.get("/api/stats.json").status_code == 200  # the root still answers


    def test_the_chat_pages_own_address_opens_the_chat_with_its_query(self, monkeypatch):
        """Streamlit serves the default page at the root only ("/chat" drew "Page not
        found" over the chat): /chat goes to the root, the chat's id along."""
        api = client(*entry.api_routes())
        for path in ("/chat", "/chat/"):
            moved = api.get(f"{path}?session=abc", follow_redirects=False)
            assert (moved.status_code, moved.headers["location"]) == (307, "/?session=abc")
        assert api.get("/chat", follow_redirects=False).headers["location"] == "/"
        monkeypatch.setattr(entry.st, "get_option", lambda name: {
            "server.baseUrlPath": "/poolchat/"}.get(name, ""))
        behind = client(*entry.api_routes()).get("/poolchat/chat?session=abc",
                                                 follow_redirects=False)
        assert behind.headers["location"] == "/poolchat/?session=abc"


class TestBrowserCookie:
    def test_a_new_browser_gets_a_random_httponly_samesite_cookie(self):
        first = client().get("/")
        second = client().get("/")
        cookie = first.headers["set-cookie"]
        assert cookie.startswith("poolchat_browser=")
        assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Path=/" in cookie
        value = cookie.split(";")[0].split("=", 1)[1]
        assert len(value) >= 32 and value != second.headers["set-cookie"].split(";")[0]

    def test_a_browser_with_the_cookie_keeps_it(self):
        browser = client()
        browser.get("/")
        assert "set-cookie" not in browser.get("/").headers

    def test_a_cookie_not_of_our_making_is_replaced(self):
        browser = client()
        browser.cookies.set("poolchat_browser", "bad")
        cookie = browser.get("/").headers["set-cookie"]
        assert cookie.startswith("poolchat_browser=") and "poolchat_browser=bad" not in cookie

    def test_behind_https_the_cookie_is_secure(self):
        response = client().get("/", headers={"X-Forwarded-Proto": "https"})
        assert "Secure" in response.headers["set-cookie"]


class TestReloadWhenCodeFailsToLoad:
    """The page's own listener goes into its HTML, zipped or not; nothing else changes."""

    @staticmethod
    def served(body: bytes, media_type: str, **headers: str) -> TestClient:
        from starlette.responses import Response

        async def page(request):
            return Response(body, media_type=media_type, headers=headers)

        return TestClient(Starlette(routes=[Route("/", page)], middleware=[
            Middleware(entry.ReloadWhenCodeFailsToLoad)]))

    def test_the_listener_goes_into_the_page_plain_or_gzipped(self):
        import gzip

        html = b"<html><head><title>PoolChat</title></head><body></body></html>"
        for body, headers in ((html, {}), (gzip.compress(html), {"content-encoding": "gzip"})):
            response = self.served(body, "text/html", **headers).get("/")
            assert response.status_code == 200
            assert response.text.count("vite:preloadError") == 1  # before </head>
            assert response.text.index("vite:preloadError") < response.text.index("</head>")
            if not headers:  # (a zipped body comes unzipped from the client)
                assert int(response.headers["content-length"]) == len(response.content)

    def test_other_responses_are_left_as_they_are(self):
        script = b"console.log('</head>')"
        response = self.served(script, "text/javascript").get("/")
        assert response.content == script
