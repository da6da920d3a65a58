"""examples/longpoll: a polled REST endpoint turned into a long-poll, on the wire and in headless Chromium."""

from __future__ import annotations

import json
import re
from concurrent.futures import ThreadPoolExecutor

import pytest

from .support import RunningExample, get_json, launch_chromium, request, sync_playwright

SUBSCRIBED = r"subscribe \S+ channel=messages"


@pytest.fixture
def longpoll():
    example = RunningExample("longpoll")
    yield example
    assert example.stop() == 0


def _held_get(example: RunningExample, pool: ThreadPoolExecutor, after: int):
    """GET /messages?after=N in a thread; returns once the proxy holds it (has subscribed it)."""
    before = len(re.findall(SUBSCRIBED, example.output))
    future = pool.submit(get_json, example.port, f"/messages?after={after}")
    example.wait_for(r"(?s)" + (SUBSCRIBED + ".*") * (before + 1))
    assert not future.done()
    return future


def test_long_poll_answered_by_a_publish(longpoll):
    """Nothing new: two clients' GETs are held; one POST answers both with the new message; a behind client is answered at once."""
    with ThreadPoolExecutor(2) as pool:
        first = _held_get(longpoll, pool, 0)
        second = _held_get(longpoll, pool, 0)
        status, _, body = request(longpoll.port, "POST", "/messages", body=b"hello")
        assert (status, json.loads(body)) == (200, {"id": 1, "text": "hello"})
        expected = {"messages": [{"id": 1, "text": "hello"}], "last_id": 1}
        assert first.result(20) == expected and second.result(20) == expected
    # A client that is behind is answered straight from the REST endpoint, as before.
    request(longpoll.port, "POST", "/messages", body=b"again")
    assert get_json(longpoll.port, "/messages?after=0") == {"messages": [{"id": 1, "text": "hello"}, {"id": 2, "text": "again"}], "last_id": 2}


def test_polling_mode_answers_at_once():
    """With --polling (the endpoint before the change) an empty GET answers immediately, with no GRIP header reaching the client."""
    example = RunningExample("longpoll", "--polling")
    try:
        status, headers, body = request(example.port, "GET", "/messages?after=0", timeout=5)
        assert (status, json.loads(body)) == (200, {"messages": [], "last_id": 0})
        assert not [h for h in headers if h.lower().startswith("grip-")]
        assert "subscribe" not in example.output
    finally:
        assert example.stop() == 0


def test_page_in_chromium(longpoll):
    """In headless Chromium the page's held request is answered by a POST: the message shows with one request, no polling."""
    with sync_playwright()() as p:
        browser = launch_chromium(p)
        try:
            page = browser.new_page()
            page.goto(longpoll.url + "/")
            longpoll.wait_for(SUBSCRIBED)
            request(longpoll.port, "POST", "/messages", body=b"from curl")
            page.wait_for_function("document.getElementById('log').textContent.includes('1: from curl')", timeout=15000)
            page.fill("#send input", "from the page")
            page.click("#send button")
            page.wait_for_function("document.getElementById('log').textContent.includes('2: from the page')", timeout=15000)
            assert page.inner_text("#log").splitlines() == ["1: from curl", "2: from the page"]
            # One request per answer: the first, the one after message 1, the one after message 2.
            assert page.inner_text("#requests") == "requests: 3"
        finally:
            browser.close()
