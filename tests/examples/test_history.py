"""examples/history: a big history fetched from the origin in pages, one response to the client, then live records."""

from __future__ import annotations

import json

from .support import RunningExample, Stream, launch_chromium, request, sync_playwright


def test_history_in_pages_then_live(tmp_path):
    """10,000 records arrive in order as one response body (five origin pages), then published records follow live."""
    # Started from another directory than the repository's: run.py finds the proxy's plugin itself.
    example = RunningExample("history", cwd=tmp_path)
    try:
        stream = Stream(example.port, "/stream")
        try:
            stream.read_until(b"\n10000 reading ")
            example.wait_for(r"subscribe \S+ channel=records")
            head = stream.received.partition(b"\r\n\r\n")[0].decode().lower()
            assert head.startswith("http/1.1 200 ok") and "transfer-encoding: chunked" in head and "grip-" not in head
            status, _, body = request(example.port, "POST", "/records", body=b"live one")
            assert (status, json.loads(body)) == (200, {"id": 10001})
            request(example.port, "POST", "/records", body=b"live two")
            stream.read_until(b"10002 live two\n")
            lines = stream.body().decode().splitlines()
            assert [int(line.split()[0]) for line in lines] == list(range(1, 10003))
            assert lines[:2] == ["1 reading 27.1", "2 reading 21.2"] and lines[-2:] == ["10001 live one", "10002 live two"]
            assert len(stream.body()) > 150_000
            # The origin served pages only: the first request, then one next link per page.
            pages = [line.split()[2] for line in example.output.splitlines() if line.startswith("[origin] GET /stream")]
            assert pages == ["/stream", "/stream?after=2000", "/stream?after=4000", "/stream?after=6000", "/stream?after=8000"]
        finally:
            stream.close()
    finally:
        assert example.stop() == 0


def test_page_in_chromium():
    """In headless Chromium the page counts the 10,000 records of history, then shows a live record as it is published."""
    example = RunningExample("history")
    try:
        with sync_playwright()() as p:
            browser = launch_chromium(p)
            try:
                page = browser.new_page()
                page.goto(example.url + "/")
                page.wait_for_function("document.getElementById('count').textContent === 'records: 10000'", timeout=15000)
                example.wait_for(r"subscribe \S+ channel=records")
                request(example.port, "POST", "/records", body=b"reading 21.5")
                page.wait_for_function("document.getElementById('count').textContent === 'records: 10001'", timeout=15000)
                assert page.inner_text("#latest").splitlines()[-2:] == ["10000 reading 28.0", "10001 reading 21.5"]
            finally:
                browser.close()
    finally:
        assert example.stop() == 0
