"""The review console over HTTP against the real broker and a real worker.

Sign-in, CSRF, roles, escaping, media guards, claims and restarts.
"""

from __future__ import annotations

import time

import httpx
import pytest

from streamer.review.queue import item_key
from tests.streamer.review.conftest import XSS_ID, ReviewRig
from tests.streamer.review.console_harness import csrf_of

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


def queue_state(client: httpx.Client) -> dict[str, dict[str, object]]:
    response = client.get("/api/queue")
    assert response.status_code == 200
    return {item["video_id"]: item for item in response.json()["items"]}


def test_every_route_needs_a_signed_in_user(review_rig: ReviewRig) -> None:
    client = review_rig.console.client()
    key = item_key(review_rig.scored[0])
    page = client.get("/")
    assert page.status_code == 303 and page.headers["location"].startswith("/login")
    assert client.get(f"/item/{key}").status_code == 303
    assert client.get("/audit").status_code == 303
    for path in ("/api/queue", f"/media/{key}", f"/item/{key}/thumbs", f"/item/{key}/thumb/0.jpg"):
        response = client.get(path)
        assert response.status_code == 401, path
        assert review_rig.scored[0] not in response.text
    token = csrf_of(client.get("/login").text)
    for path in ("/next", f"/item/{key}/claim", f"/item/{key}/decide"):
        assert client.post(path, data={"csrf_token": token, "decision": "real"}).status_code == 401, path


def test_sign_in_refuses_wrong_passwords_and_limits_attempts(review_rig: ReviewRig) -> None:
    console = review_rig.new_console(login_rate_limit="3/minute").start()
    try:
        client = console.client()
        token = csrf_of(client.get("/login").text)
        statuses = [
            client.post("/login", data={"username": "ann", "password": "wrong", "csrf_token": token}).status_code
            for _ in range(4)
        ]
        assert statuses == [401, 401, 401, 429]
        # the right password from the same address is refused too while the limit holds
        good = client.post("/login", data={"username": "ann", "password": "correct horse battery", "csrf_token": token})
        assert good.status_code == 429
        assert 'motionguard_review_sign_ins_total{outcome="rate_limited"} 2.0' in console.metrics()
        # a sign-in form without its CSRF token is refused
        other = console.client()
        assert other.post("/login", data={"username": "bob", "password": "x"}).status_code == 403
    finally:
        console.stop()


def test_session_cookie_is_httponly_and_samesite(review_rig: ReviewRig) -> None:
    client = review_rig.console.client()
    token = csrf_of(client.get("/login").text)
    response = client.post(
        "/login", data={"username": "bob", "password": "correct horse battery", "csrf_token": token, "next": "/"}
    )
    cookie = response.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie
    assert "content-security-policy" in response.headers


def test_a_post_without_the_right_csrf_token_is_refused(review_rig: ReviewRig) -> None:
    client = review_rig.console.sign_in("bob")
    held_before = {v for v, item in queue_state(client).items() if item["claimed_by"] == "bob"}
    assert client.post("/next", data={}).status_code == 403
    assert client.post("/next", data={"csrf_token": "forged"}).status_code == 403
    assert client.post("/next", headers={"X-CSRF-Token": "forged"}).status_code == 403
    assert {v for v, item in queue_state(client).items() if item["claimed_by"] == "bob"} == held_before


def test_a_viewer_reads_but_cannot_decide(review_rig: ReviewRig) -> None:
    client = review_rig.console.sign_in("vera")
    page = client.get("/")
    undecided = [v for v, item in queue_state(client).items() if item["state"] == "open" and v in review_rig.scored]
    assert page.status_code == 200 and undecided and undecided[0] in page.text
    token = csrf_of(page.text)
    key = item_key(undecided[0])
    assert client.post("/next", data={"csrf_token": token}).status_code == 403
    assert client.post(f"/item/{key}/claim", data={"csrf_token": token}).status_code == 403
    assert client.post(f"/item/{key}/decide", data={"csrf_token": token, "decision": "real"}).status_code == 403
    assert queue_state(client)[undecided[0]]["state"] == "open"


def test_untrusted_video_ids_uris_and_issuers_render_as_text(review_rig: ReviewRig) -> None:
    client = review_rig.console.sign_in("vera")
    queue_page = client.get("/?policy=hostile").text
    assert "&lt;script&gt;window.__xss=1&lt;/script&gt;" in queue_page
    assert "<script>window.__xss" not in queue_page
    item_page = client.get(f"/item/{item_key(XSS_ID)}").text
    assert "&lt;script&gt;window.__xss=1&lt;/script&gt;" in item_page
    assert '"><img src=x' not in item_page and "&#34;&gt;&lt;img src=x onerror=" in item_page
    assert "<b onmouseover" not in item_page and "&lt;b onmouseover=" in item_page
    assert 'id="untrained"' in item_page  # the hostile verdict says its model is untrained: red banner


def test_media_route_applies_the_worker_uri_guards_and_serves_ranges(review_rig: ReviewRig) -> None:
    client = review_rig.console.sign_in("vera")
    for name, why in (("traversal", "outside the allowed roots"), ("symlink", "outside the allowed roots"),
                      ("private", "private, loopback or link-local")):  # fmt: skip
        response = client.get(f"/media/{item_key(review_rig.hostile[name])}")
        assert response.status_code == 403, (name, response.text)
        assert why in response.text
    missing = client.get(f"/media/{item_key(XSS_ID)}")
    assert missing.status_code == 404 and missing.headers["content-type"].startswith("text/plain")
    key = item_key(review_rig.scored[0])
    whole = client.get(f"/media/{key}")
    assert whole.status_code == 200 and whole.headers["content-type"] == "video/webm"
    part = client.get(f"/media/{key}", headers={"Range": "bytes=100-199"})
    assert part.status_code == 206
    assert part.headers["content-range"] == f"bytes 100-199/{len(whole.content)}"
    assert part.content == whole.content[100:200]
    assert client.get("/media/0123456789abcdef0123").status_code == 404


def test_an_expired_claim_returns_to_the_queue(review_rig: ReviewRig) -> None:
    console = review_rig.new_console(claim_seconds=2.0).start()
    try:
        ann, bob = console.sign_in("ann"), console.sign_in("bob")
        page = ann.post("/next", data={"csrf_token": csrf_of(ann.get("/").text), "policy": "default"})
        assert page.status_code == 303
        held_key = page.headers["location"].split("/item/")[1].split("?")[0]
        held = next(v for v, i in queue_state(ann).items() if i["key"] == held_key)
        assert queue_state(bob)[held]["claimed_by"] == "ann"
        deadline = time.monotonic() + 15
        while queue_state(bob)[held]["state"] != "open":
            assert time.monotonic() < deadline, "the claim never expired"
            time.sleep(0.2)
        taken = bob.post(f"/item/{held_key}/claim", data={"csrf_token": csrf_of(bob.get("/").text)})
        assert taken.status_code == 303
        assert queue_state(ann)[held]["claimed_by"] == "bob"
        token = csrf_of(ann.get("/").text)
        refused = ann.post(f"/item/{held_key}/decide", data={"csrf_token": token, "decision": "real"})
        assert refused.status_code == 409
    finally:
        console.stop()


def test_a_restarted_console_loses_nothing_and_decides_nothing_twice(review_rig: ReviewRig) -> None:
    first = review_rig.new_console().start()
    try:
        ann = first.sign_in("ann")
        token = csrf_of(ann.get("/").text)
        key = item_key(review_rig.hostile["traversal"])
        assert ann.post(f"/item/{key}/claim", data={"csrf_token": token}).status_code == 303
        decided = ann.post(f"/item/{key}/decide", data={"csrf_token": token, "decision": "cant_tell", "note": "n/a"})
        assert decided.status_code == 303
        before = queue_state(ann)
    finally:
        first.stop()
    video_id = next(v for v, i in before.items() if i["key"] == key)
    assert before[video_id]["decision"] == "cant_tell"
    second = review_rig.new_console().start()
    try:
        ann = second.sign_in("ann")
        after = queue_state(ann)
        assert {v: i["decision"] for v, i in after.items()} == {v: i["decision"] for v, i in before.items()}
        token = csrf_of(ann.get("/").text)
        again = ann.post(f"/item/{key}/claim", data={"csrf_token": token})
        assert again.status_code == 409 and "already been decided" in again.text
        offered = ann.post("/next", data={"csrf_token": token, "policy": "hostile"}).headers["location"]
        assert "/item/" in offered and key not in offered  # other hostile items are still open
    finally:
        second.stop()
    labels = [r for r in review_rig.labels() if r["video_id"] == video_id]
    assert len(labels) == 1 and labels[0]["moderator"] == "ann" and labels[0]["answers"] == "needs_review"
