"""
Headless Chromium through the real C{twistd -n pushpin}'s https port: a page opens eight
EventSource streams (more than the six HTTP/1.1 connections a browser allows per host, so
over HTTP/1.1 the last two would wait for ever), all held by GRIP; once each has subscribed,
one event is published to each, and the page reports what it got with a POST. Skipped when
C{/usr/bin/chromium} is not installed (Debian: C{apt-get install -y chromium}).
"""

from __future__ import annotations

import json
import os
import re

import pytest
import pytest_twisted
from twisted.internet import protocol

from .harness import ScriptedOrigin, Waiter, start_origin
from .test_end_to_end import _publish
from .test_http2 import ca  # noqa: F401  (the module's CA fixture)
from .test_tls_listeners import _install, start_configured

CHROMIUM = "/usr/bin/chromium"
STREAMS = 8

pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} is not installed (Debian: apt-get install -y chromium)")

PAGE = b"""<!doctype html><title>streams</title><script>
const got = {};
function report() {
  const nav = performance.getEntriesByType("navigation")[0];
  fetch("/report", {method: "POST", body: JSON.stringify({got: got, page: nav ? nav.nextHopProtocol : null})});
}
for (let i = 0; i < %d; i++) {
  const es = new EventSource("/sse?ch=c" + i);
  es.onmessage = (e) => { got["c" + i] = e.data; es.close(); if (Object.keys(got).length === %d) report(); };
}
</script>""" % (STREAMS, STREAMS)


class Browser(protocol.ProcessProtocol):
    """The Chromium process: its output kept for a failure message."""

    def __init__(self) -> None:
        self.output = b""
        self.ended = Waiter()
        self.done = False

    def outReceived(self, data: bytes) -> None:
        self.output += data

    errReceived = outReceived

    def processEnded(self, reason) -> None:
        self.done = True
        self.ended.check()


@pytest_twisted.ensureDeferred
async def test_chromium_shares_one_h2_connection_for_eight_event_sources(reactor, tmp_path, ca):  # noqa: F811
    """Chromium loads a page over h2 whose eight EventSource streams are all held at once and each gets its published event."""
    _install(ca, tmp_path)
    origin = ScriptedOrigin()

    def page(req):
        req.setHeader(b"content-type", b"text/html")
        return PAGE

    def sse(req):
        req.setHeader(b"content-type", b"text/event-stream")
        req.setHeader(b"grip-hold", b"stream")
        req.setHeader(b"grip-channel", req.args[b"ch"][0])
        return b":open\n\n"

    def report(req):
        return b"thanks\n"

    origin.handlers.update({b"/page": page, b"/sse": sse, b"/report": report})
    origin_port = await start_origin(reactor, origin)
    proxy = await start_configured(reactor, tmp_path, [f"* 127.0.0.1:{origin_port.getHost().port}"],
                                   runner={"https_ports": "127.0.0.1:0"})
    browser = Browser()
    process = reactor.spawnProcess(browser, CHROMIUM, [
        CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--ignore-certificate-errors",
        "--no-first-run", "--disable-extensions", f"--user-data-dir={tmp_path / 'chromium'}",
        f"https://localhost:{proxy.https_port}/page"], env={**os.environ, "HOME": str(tmp_path)})
    try:
        for i in range(STREAMS):
            await proxy.wait_for_log(rf"channel=c{i}\b", timeout=60)
        await _publish(reactor, proxy.control_port, [
            {"channel": f"c{i}", "formats": {"http-stream": {"content": f"data: hello {i}\n\n"}}} for i in range(STREAMS)])
        reports = lambda: [json.loads(r["body"]) for r in origin.requests if r["uri"] == b"/report"]  # noqa: E731
        await origin.waiter.wait(reactor, reports, timeout=30, what="the page's report")
        reports = reports()
        assert reports[0]["got"] == {f"c{i}": f"hello {i}" for i in range(STREAMS)}
        assert reports[0]["page"] == "h2"
        assert len(set(re.findall(r"subscribe \S+ channel=(c\d)", proxy.output))) == STREAMS  # all held at once
    finally:
        if not browser.done:
            process.signalProcess("KILL")
            await browser.ended.wait(reactor, lambda: browser.done, what="chromium to exit")
        assert await proxy.stop() == 0
        await origin_port.stopListening()
