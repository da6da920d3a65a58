"""
The status page through the real C{twistd -n pushpin} with two processes, in headless
Chromium: while a publish load runs, the figures the page shows match C{/metrics}; at
rest they are equal; drops show with their connection and channel. Off loopback, the page
needs the console's credentials.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import socket
import subprocess
import threading
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families


from tests.watched import WatchedProcess

from .harness import child_env, proxy_argv, write_config

DEADLINE = 30.0
CHROMIUM = "/usr/bin/chromium"
#: where the screenshot for the README goes besides tmp_path (set it to refresh etc/status-page.png)
SCREENSHOT_ENV = "PUSHPIN_TX_STATUS_SCREENSHOT"


class Proxy(WatchedProcess):
    """C{twistd -n pushpin} in a child process; its output read line by line."""

    label = "the proxy's"

    def __init__(self, conf: Path, cwd: Path) -> None:
        super().__init__(subprocess.Popen(proxy_argv("--config", str(conf)), stdout=subprocess.PIPE,
                                          stderr=subprocess.STDOUT, text=True, bufsize=1, cwd=str(cwd), env=child_env()),
                         DEADLINE)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(DEADLINE)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        print(f"---- proxy log ----\n{self.output}")


def start(tmp_path: Path, *, console_passwd: str | None = None, **overrides: str) -> tuple[Proxy, dict[str, int]]:
    """The proxy on port-0 loopback listeners with the test origin; its client, control and metrics ports."""
    conf = write_config(tmp_path, ["* test"], **overrides)
    if console_passwd is not None:
        conf.write_text(conf.read_text() + f"\n[console]\npasswd={console_passwd}\n")
    proxy = Proxy(conf, tmp_path)
    try:
        ports = {
            "client": int(proxy.wait_for(r"client listening on [^:]+:(\d+)").group(1)),
            "control": int(proxy.wait_for(r"control API listening on [^:]+:(\d+)").group(1)),
            "metrics": int(proxy.wait_for(r"metrics listening on \S*?:(\d+)").group(1)),
        }
    except BaseException:
        proxy.stop()
        raise
    return proxy, ports


def request(port: int, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=DEADLINE)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def scrape(port: int) -> dict[str, float]:
    """C{/metrics} as the page's figures: held by kind, publish requests, deliveries, drops."""
    status, _, body = request(port, "GET", "/metrics")
    assert status == 200
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            if sample.name == "held_connections":
                values["held-" + sample.labels["kind"]] = sample.value
            elif sample.name in ("publishes_total", "deliveries_total", "drops_total"):
                key = "total-" + sample.name[: -len("_total")]
                values[key] = values.get(key, 0) + sample.value
            elif sample.name == "connection_connected":
                values["held-total"] = sample.value
    values.setdefault("total-drops", 0)
    return values


FIGURES = ["held-total", "held-stream", "held-response", "held-ws", "total-publishes", "total-deliveries", "total-drops"]


def on_page(page) -> dict[str, float]:
    """The figures the page shows now (and the event they came from)."""
    got = page.evaluate("ids => Object.fromEntries(ids.map(id => [id, document.getElementById(id).textContent]))",
                        FIGURES + ["seq"])
    return {k: float(v.replace(" ", "")) for k, v in got.items()}


def browser_or_skip():
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} is not installed (Debian's chromium package)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright for Python is not installed (pip install playwright)")
    return sync_playwright


class PublishLoad:
    """Publishes (5 items a request, on three channels) from a thread until stopped; counts what it sent."""

    CHANNELS = ("busy", "mid", "quiet")

    def __init__(self, port: int) -> None:
        self.port = port
        self.requests = 0
        self.items: dict[str, int] = {c: 0 for c in self.CHANNELS}
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=DEADLINE)
        n = 0
        try:
            while not self._stop.is_set():
                channels = [self.CHANNELS[(n + i) % 3] for i in range(5)]
                body = json.dumps({"items": [{"channel": c, "formats": {"http-stream": {"content": f"m{n}\n"}}}
                                             for c in channels]}).encode()
                conn.request("POST", "/publish/", body=body, headers={"Content-Type": "application/json"})
                response = conn.getresponse()
                response.read()
                if response.status != 200:
                    self.errors.append(f"{response.status}")
                    return
                self.requests += 1
                for c in channels:
                    self.items[c] += 1
                n += 1
                self._stop.wait(0.002)  # a steady load that leaves the two cores to the proxy and the browser
        except Exception as e:  # reported by the test
            self.errors.append(repr(e))
        finally:
            conn.close()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(DEADLINE)


class Drain:
    """Reads every held client's bytes from a thread (so no stream backs up), until closed."""

    def __init__(self, socks: list[socket.socket]) -> None:
        import selectors

        self._selector = selectors.DefaultSelector()
        for sock in socks:
            sock.setblocking(False)
            self._selector.register(sock, selectors.EVENT_READ)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            for key, _ in self._selector.select(0.1):
                try:
                    if not key.fileobj.recv(65536):
                        self._selector.unregister(key.fileobj)
                except BlockingIOError:
                    pass

    def close(self) -> None:
        self._stop.set()
        self._thread.join(DEADLINE)
        self._selector.close()


def open_stream(port: int, channel: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=DEADLINE)
    sock.sendall(f"GET /stream?channel={channel} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
    return sock


def test_the_page_matches_metrics_under_a_publish_load(tmp_path):
    """In Chromium the page's held connections and totals lie between two scrapes during a load and equal /metrics at rest."""
    sync_playwright = browser_or_skip()
    proxy, ports = start(tmp_path, prometheus_port="127.0.0.1:0", workers="2", id_cache_ttl="60")
    socks: list[socket.socket] = []
    try:
        proxy.wait_for(r"worker 1 \(pid \d+\) serving")  # both processes take clients
        subscribers = {"busy": 6, "mid": 3, "quiet": 1}
        for channel, n in subscribers.items():
            socks += [open_stream(ports["client"], channel) for _ in range(n)]
        socks += [open_stream(ports["client"], "never") for _ in range(2)]
        for _ in range(2):
            sock = socket.create_connection(("127.0.0.1", ports["client"]), timeout=DEADLINE)
            sock.sendall(b"GET /response?channel=lp HTTP/1.1\r\nHost: localhost\r\n\r\n")
            socks.append(sock)
        drain = Drain(socks)
        url = f"http://127.0.0.1:{ports['metrics']}/status"
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            try:
                # playwright evaluates its wait conditions as strings, which the page's CSP (no eval) forbids
                page = browser.new_page(viewport={"width": 1100, "height": 550}, bypass_csp=True)
                errors: list[str] = []
                page.on("pageerror", lambda e: errors.append(str(e)))
                page.goto(url)
                # every client is held (in either process) before the load starts
                page.wait_for_function(
                    "document.getElementById('held-stream').textContent === '12'"
                    " && document.getElementById('held-response').textContent === '2'", timeout=DEADLINE * 1000)
                assert page.inner_text("#state") == "live"
                rows = page.eval_on_selector_all("#channels tr", "rs => rs.map(r => [...r.cells].map(c => c.textContent))")
                assert rows[:4] == [["busy", "6"], ["mid", "3"], ["lp", "2"], ["never", "2"]]
                assert len(page.query_selector_all("#workers tr")) == 2  # both processes

                load = PublishLoad(ports["control"])
                try:
                    page.wait_for_function("parseFloat(document.getElementById('rate-publishes').textContent) > 0",
                                           timeout=DEADLINE * 1000)
                    for _ in range(3):  # three comparisons while the load runs
                        before = scrape(ports["metrics"])
                        seq = on_page(page)["seq"]
                        # two more events: the third one's figures were all gathered after `before`
                        page.wait_for_function(f"parseInt(document.getElementById('seq').textContent) >= {seq + 3}",
                                               timeout=DEADLINE * 1000)
                        shown = on_page(page)
                        after = scrape(ports["metrics"])
                        for key in FIGURES:
                            assert before[key] <= shown[key] <= after[key], (key, before, shown, after)
                        assert shown["held-stream"] == 12 and shown["held-response"] == 2
                        assert before["total-publishes"] < after["total-publishes"]  # the load is running
                finally:
                    load.stop()
                assert load.errors == [] and load.requests > 0

                # a drop: the same item id twice on a channel (id_cache_ttl), in the main process
                dup = json.dumps({"items": [{"channel": "quiet", "id": "dup-1", "formats": {"http-stream": {"content": "d\n"}}}]})
                for _ in range(2):
                    assert request(ports["control"], "POST", "/publish/", dup.encode(), {"Content-Type": "application/json"})[0] == 200
                delivered = sum(subscribers[c] * n for c, n in load.items.items()) + subscribers["quiet"]
                page.wait_for_function(
                    f"document.getElementById('total-deliveries').textContent.replace(/ /g, '') === '{delivered}'"
                    f" && document.getElementById('total-publishes').textContent.replace(/ /g, '') === '{load.requests + 2}'"
                    " && document.getElementById('total-drops').textContent === '1'", timeout=DEADLINE * 1000)
                at_rest = scrape(ports["metrics"])
                assert {k: v for k, v in on_page(page).items() if k != "seq"} == at_rest
                assert at_rest["total-deliveries"] == delivered and at_rest["total-publishes"] == load.requests + 2
                cells = page.eval_on_selector_all("#drops tr:first-child td", "cs => cs.map(c => c.textContent)")
                assert cells[1:] == ["0", "channel quiet", "quiet", "duplicate-id (id dup-1)"]
                page.screenshot(path=str(tmp_path / "status-page.png"))
                if os.environ.get(SCREENSHOT_ENV):
                    page.screenshot(path=os.environ[SCREENSHOT_ENV])
                assert errors == []
            finally:
                browser.close()
        drain.close()
    finally:
        for sock in socks:
            sock.close()
        proxy.stop()


def test_off_loopback_the_page_needs_the_consoles_password(tmp_path):
    """With metrics on all interfaces, /status answers 401 without the console's password and the page with it."""
    passwd = tmp_path / "console.passwd"
    passwd.write_text("ops:s3cret-for-test\n")
    proxy, ports = start(tmp_path, console_passwd=str(passwd), prometheus_port="0.0.0.0:0", workers="1")
    try:
        status, headers, body = request(ports["metrics"], "GET", "/status")
        assert status == 401 and headers.get("WWW-Authenticate", "").startswith('Basic realm="pushpin-tx status"')
        auth = {"Authorization": "Basic " + base64.b64encode(b"ops:s3cret-for-test").decode()}
        status, headers, body = request(ports["metrics"], "GET", "/status", headers=auth)
        assert status == 200 and b"<title>pushpin-tx status</title>" in body
        assert request(ports["metrics"], "GET", "/metrics")[0] == 200  # Prometheus scrapes as before
        proxy.wait_for(r"/status needs the console's credentials")
    finally:
        proxy.stop()
    assert "s3cret-for-test" not in proxy.output
