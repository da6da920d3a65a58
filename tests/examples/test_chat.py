"""examples/chat: the serverless WebSocket chat, from WebSocket clients and in headless Chromium."""

from __future__ import annotations

import asyncio
import json
import os

import pytest

from .support import ROOT, RunningExample, launch_chromium, request, sync_playwright


@pytest.fixture(scope="module")
def chat():
    """One chat example for the module: its tests use the room one after another."""
    example = RunningExample("chat")
    yield example
    assert example.stop() == 0


def test_page_and_non_websocket_request(chat):
    """GET / is the chat page through the proxy; a plain POST to the function is refused with 400."""
    status, headers, body = request(chat.port, "GET", "/")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert b'id="alice"' in body and b'id="bob"' in body
    status, _, body = request(chat.port, "POST", "/chat", body=b"hi", headers={"Content-Type": "text/plain"})
    assert (status, body) == (400, b"Not a WebSocket-over-HTTP request\n")


def test_two_websocket_clients_chat(chat):
    """Two WebSocket clients: what one sends reaches both, through the stateless function and a publish."""
    import websockets

    async def scenario():
        url = f"ws://127.0.0.1:{chat.port}/chat"
        async with websockets.connect(url, open_timeout=10) as alice, websockets.connect(url, open_timeout=10) as bob:
            await alice.send(json.dumps({"from": "Alice", "text": "hello Bob"}))
            got = [json.loads(await asyncio.wait_for(ws.recv(), 10)) for ws in (alice, bob)]
            await bob.send(json.dumps({"from": "Bob", "text": "hi Alice"}))
            got += [json.loads(await asyncio.wait_for(ws.recv(), 10)) for ws in (alice, bob)]
            return got

    got = asyncio.run(scenario())
    assert got == [{"from": "Alice", "text": "hello Bob"}] * 2 + [{"from": "Bob", "text": "hi Alice"}] * 2
    # The function was only ever called over HTTP: OPEN, then each TEXT as a POST.
    assert chat.output.count("[origin] POST /chat") >= 4


def test_chat_page_in_chromium(chat):
    """In headless Chromium, a message typed in Alice's window shows in both windows, then Bob answers."""
    with sync_playwright()() as p:
        browser = launch_chromium(p)
        try:
            page = browser.new_page(viewport={"width": 820, "height": 360})
            page.goto(chat.url + "/")
            for who in ("alice", "bob"):
                page.wait_for_function(f"document.querySelector('#{who} .status').textContent === 'connected'", timeout=15000)
            page.fill("#alice input", "hello Bob")
            page.click("#alice button")
            for who in ("alice", "bob"):
                page.wait_for_function(f"document.querySelector('#{who} .log').textContent.includes('Alice: hello Bob')", timeout=15000)
            page.fill("#bob input", "hi Alice")
            page.press("#bob input", "Enter")
            for who in ("alice", "bob"):
                page.wait_for_function(f"document.querySelector('#{who} .log').textContent.includes('Bob: hi Alice')", timeout=15000)
            logs = [page.inner_text(f"#{who} .log").splitlines() for who in ("alice", "bob")]
            assert logs == [["Alice: hello Bob", "Bob: hi Alice"]] * 2
            if os.environ.get("PUSHPIN_TX_EXAMPLE_SCREENSHOT"):
                page.screenshot(path=str(ROOT / "examples" / "chat" / "screenshot.png"))
        finally:
            browser.close()
