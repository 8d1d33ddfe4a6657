"""The review console in Debian's Chromium (headless, driven by Playwright), against the real broker and worker.

Chromium comes from the OS packages (``scripts/setup-system.sh`` installs
``chromium``); Playwright is launched on that executable and never downloads
a browser.  Set ``MOTIONGUARD_TEST_SCREENSHOT=path.png`` to save screenshots
of an item page and of the queue page (``path.queue.png``) with the real queue (docs/ has them).
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright

from streamer.review.queue import item_key
from tests.streamer.review.conftest import XSS_ID, ReviewRig
from tests.streamer.review.console_harness import PASSWORD

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

CHROMIUM = "/usr/bin/chromium"
WAIT_MS = 30_000


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if shutil.which(CHROMIUM) is None:
        pytest.fail(f"{CHROMIUM} is missing: run scripts/setup-system.sh (installs Debian's chromium)")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            yield chromium
        finally:
            chromium.close()


def signed_in(browser: Browser, rig: ReviewRig, name: str) -> tuple[BrowserContext, Page]:
    context = browser.new_context(viewport={"width": 1360, "height": 900})
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    page.goto(rig.console.base_url + "/?policy=default")
    assert "/login" in page.url
    page.fill("input[name=username]", name)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url("**/?policy=default")
    return context, page


def label_outcomes(rig: ReviewRig) -> float:
    return sum(v for k, v in rig.worker.metrics().items() if k.startswith("motionguard_label_outcomes_total"))


def wait_for(condition, what: str, timeout_seconds: float = 30.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def open_item_id(page: Page) -> str:
    page.wait_for_url("**/item/**")
    return page.locator("#video-id").inner_text()


def test_moderators_review_decide_by_click_and_key_and_never_share_an_item(
    review_rig: ReviewRig, browser: Browser
) -> None:
    rig = review_rig
    outcomes_before = label_outcomes(rig)
    ann_context, ann = signed_in(browser, rig, "ann")
    bob_context, bob = signed_in(browser, rig, "bob")
    try:
        rows = ann.locator("#queue tr.item")
        assert rows.count() >= 3
        shown = set(ann.locator("#queue .video-id").all_inner_texts())
        assert set(rig.scored) <= shown

        ann.click("#next")
        first = open_item_id(ann)
        assert first in rig.scored
        # the player reaches a playable state through the guarded media route (range requests)
        ann.wait_for_function("() => document.getElementById('player').readyState >= 3")
        assert ann.evaluate("document.getElementById('player').duration") > 2.5
        # timeline: segment bars and one tick per sampled frame; thumbnails sampled again on demand
        assert ann.locator("#timeline rect.segment").count() >= 1
        assert ann.locator("#timeline line.frame-tick").count() == 4
        ann.locator("#thumbs img").first.wait_for()
        ann.wait_for_function("() => [...document.querySelectorAll('#thumbs img')].every(i => i.naturalWidth > 0)")
        assert ann.locator("#thumbs img").count() == 4
        assert ann.locator("#untrained").is_visible()  # the tiny test model has random weights

        # bob asks for the next item while ann holds hers: he never gets it
        bob.click("#next")
        bobs = open_item_id(bob)
        assert bobs != first
        bob.goto(rig.console.base_url + f"/item/{item_key(first)}")
        assert "Being reviewed by ann" in bob.locator("#decision").inner_text()
        assert bob.locator("#decide-ai").count() == 0

        # decide by click, with a note: the next item loads by itself
        ann.fill("#note", "filmed: checked by click")
        ann.click("#decide-real")
        ann.wait_for_function(f"() => !location.pathname.endsWith('/{item_key(first)}')")
        second = open_item_id(ann)
        assert second not in (first, bobs)
        # decide by key
        ann.locator("#decide-ai").wait_for()
        ann.keyboard.press("a")
        ann.wait_for_function(f"() => !location.pathname.endsWith('/{item_key(second)}')")

        labels = wait_for(
            lambda: (
                {r["video_id"]: r for r in rig.labels() if r["video_id"] in (first, second)}
                if len({r["video_id"] for r in rig.labels()} & {first, second}) == 2
                else None
            ),
            "both labels on the labels topic",
        )
        assert (labels[first]["label"], labels[first]["moderator"]) == ("real", "ann")
        assert labels[first]["note"] == "filmed: checked by click"
        assert (labels[second]["label"], labels[second]["moderator"]) == ("ai_generated", "ann")
        assert {labels[first]["answers"], labels[second]["answers"]} <= {"ai_generated", "real", "needs_review"}
        # the worker joins the console's labels with its verdicts: its accuracy metrics move
        wait_for(lambda: label_outcomes(rig) >= outcomes_before + 2, "the worker's label outcomes to count both")

        # the console's own metrics: its decisions, and the audit sample's labels apart from the review queue
        metrics = rig.console.metrics()
        assert 'motionguard_review_decisions_total{label="real"}' in metrics
        audit_labels = sum(
            float(line.rpartition(" ")[2])
            for line in metrics.splitlines()
            if line.startswith('motionguard_review_labelled_verdicts{origin="audit"')
        )
        assert audit_labels >= 2  # the worker's scored videos are all in the audit sample (fraction 1.0)
        assert 'motionguard_review_precision_ratio{origin="audit"}' in metrics
        # the audit log lists both decisions with who made them
        ann.goto(rig.console.base_url + "/audit")
        audit = ann.locator("#audit").inner_text()
        assert first in audit and second in audit and "ann" in audit
        screenshot = os.environ.get("MOTIONGUARD_TEST_SCREENSHOT")
        if screenshot:
            bob.goto(rig.console.base_url + f"/item/{item_key(bobs)}")
            bob.locator("#thumbs img").first.wait_for()
            bob.wait_for_function("() => document.getElementById('player').readyState >= 2")
            bob.screenshot(path=str(Path(screenshot)), full_page=True)
            bob.goto(rig.console.base_url + "/")
            bob.screenshot(path=str(Path(screenshot).with_suffix(".queue.png")), full_page=True)
    finally:
        ann_context.close()
        bob_context.close()


def test_an_xss_video_id_renders_as_text_and_runs_nothing(review_rig: ReviewRig, browser: Browser) -> None:
    context, page = signed_in(browser, review_rig, "vera")
    try:
        page.goto(review_rig.console.base_url + "/?policy=hostile")
        assert XSS_ID in page.locator("#queue").inner_text()
        page.goto(review_rig.console.base_url + f"/item/{item_key(XSS_ID)}")
        assert page.locator("#video-id").inner_text() == XSS_ID
        assert '"><img src=x onerror="window.__xss=2">' in page.locator("#source").inner_text()
        assert page.evaluate("window.__xss") is None
        assert page.locator("#decide-ai").count() == 0  # a viewer gets no decision buttons
    finally:
        context.close()
