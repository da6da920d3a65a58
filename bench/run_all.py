#!/usr/bin/env python3
"""
Every benchmark scenario in one command, and one summary table with the ratio pushpin-tx ÷
Pushpin of each figure against its target.

Each scenario is one run (two for worker scaling) of the existing scripts, L{proxy_get} and
L{fanout}, as a subprocess with C{--json FILE}: each run starts its own proxies, origin and
load process (pinning, generated configs and checks are theirs), and a fresh interpreter per
run keeps one scenario's file descriptors, memory and imports out of the next. Their full
output goes to a log file per run; this script prints the summary: per figure the two
values, the ratio, the target and whether it is met; per scenario the load generator's own
CPU (a saturated generator marks the rates and latencies it limits) and the correctness
check (every subscriber got every message exactly once, in order; no request errors).

Exit status 1 when pushpin-tx fails a correctness check or a run crashes or overruns its
deadline. Pushpin's own failures (it drops publishes under its stock rate limits in the
many-channel scenario) are listed but do not change the status; missed targets do not
either: they are figures, not correctness.

Usage: python bench/run_all.py [--quick] [--only stream,ws,...] [--targets pushpin-tx,pushpin]
                               [--loglevel 2] [--log-dir DIR] [--verbose] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import selectors
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402  (a script directory, run as `python bench/run_all.py`)
import proxies  # noqa: E402

HERE = Path(__file__).resolve().parent
#: a load generator above this share of its core is taken as the limit of what it measured
SATURATED = 0.9


# --- what runs, and what is compared --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Run:
    """One invocation of a bench script (C{--targets} and C{--json} are added)."""

    script: str
    args: tuple[str, ...]
    quick_args: tuple[str, ...]
    timeout: float  # seconds for the whole run, full size
    pushpin_tx_only: bool = False


@dataclass(frozen=True, slots=True)
class Figure:
    """
    One row of the summary: C{key} of each side's result, formatted by C{fmt}; C{op} and
    C{target} apply to the ratio (or, with C{absolute}, to pushpin-tx's value itself).
    C{client_bound}: a rate or latency, which a saturated load generator limits.
    """

    label: str
    key: str
    fmt: Callable[[float | None], str]
    op: str | None = None  # ">=", "<=", "==" or None (shown for information)
    target: float | None = None
    target_text: str = ""
    client_bound: bool = False
    absolute: bool = False


@dataclass(frozen=True, slots=True)
class Scenario:
    """A named scenario: its runs, which (run, target) pair is compared, and its figures."""

    name: str
    title: str
    runs: tuple[Run, ...]
    figures: tuple[Figure, ...]
    candidate: tuple[int, str] = (0, "pushpin-tx")
    baseline: tuple[int, str] = (0, "pushpin")
    candidate_label: str = "pushpin-tx"
    baseline_label: str = "Pushpin"


def _rate(v: float | None) -> str:
    return "-" if v is None else f"{v:,.0f}"


def _count(v: float | None) -> str:
    return "-" if v is None else f"{v:,.0f}"


def _seconds(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f} s"


def _times(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}x"


_FANOUT_QUICK = ("--connections", "500", "--messages", "100")
# worker scaling compares two rates of one proxy: a longer burst (about 2 s at one worker)
# than the other fan-outs keeps start-up and scheduling noise out of the ratio
_WORKERS_FULL = ("--messages", "400")
_WORKERS_QUICK = ("--connections", "500", "--messages", "200")

SCENARIOS: tuple[Scenario, ...] = (
    Scenario("proxy_get", "proxied GET, 50 keep-alive clients",
             (Run("proxy_get.py", (), ("--seconds", "3", "--warmup", "1"), 180),),
             (Figure("req/s", "rps", _rate, ">=", 3, "≥ 3x", client_bound=True),
              Figure("CPU/request", "cpu_per_req", common.fmt_us, "<=", 1 / 3, "≤ 0.33x"),
              Figure("p99 latency", "p99", common.fmt_us, client_bound=True))),
    Scenario("stream", "fan-out burst, HTTP streams",
             (Run("fanout.py", (), _FANOUT_QUICK, 240),),
             (Figure("deliveries/s", "rate", _rate, ">=", 1, "≥ 1x", client_bound=True),
              Figure("CPU/delivery", "cpu_per_delivery", common.fmt_us, "<=", 1, "≤ 1x"),
              Figure("p99 latency", "p99", common.fmt_us, "<=", 0.1, "≤ 0.1x", client_bound=True),
              Figure("RSS/held conn", "rss_per_conn", common.fmt_kb, "<=", 0.25, "≤ 0.25x"),
              Figure("conns/s", "connect_rate", _rate, ">=", 5, "≥ 5x"))),
    Scenario("ws", "fan-out burst, WebSocket clients of the test target",
             (Run("fanout.py", ("--mode", "ws"), ("--mode", "ws", *_FANOUT_QUICK), 240),),
             (Figure("deliveries/s", "rate", _rate, ">=", 5, "≥ 5x", client_bound=True),
              Figure("CPU/delivery", "cpu_per_delivery", common.fmt_us),
              Figure("p99 latency", "p99", common.fmt_us, client_bound=True),
              Figure("RSS/held conn", "rss_per_conn", common.fmt_kb, "<=", 0.25, "≤ 0.25x"),
              Figure("conns/s", "connect_rate", _rate, ">=", 5, "≥ 5x"))),
    Scenario("pace", "paced fan-out, 10 publishes/s",
             (Run("fanout.py", ("--pace", "10"), ("--pace", "10", "--connections", "500", "--messages", "30"),
                  240),),
             (Figure("p99 latency", "p99", common.fmt_us, "<=", 0.5, "≤ 0.5x", client_bound=True),
              Figure("p50 latency", "p50", common.fmt_us, client_bound=True),
              Figure("CPU/delivery", "cpu_per_delivery", common.fmt_us))),
    Scenario("many", "many channels: one per subscriber, stock rate limits",
             (Run("fanout.py", ("--many-channels",),
                  ("--many-channels", "--connections", "500", "--messages", "10"), 240),),
             (Figure("deliveries/s", "rate", _rate, ">=", 1, "≥ 1x", client_bound=True),
              Figure("lost", "lost", _count, "==", 0, "0 (pushpin-tx)", absolute=True),
              Figure("CPU/delivery", "cpu_per_delivery", common.fmt_us))),
    # --- the way most backends publish: one publisher, each publish waiting for its answer ---
    Scenario("stream_1pub", "fan-out to 1,000 streams, one publisher waiting for each answer",
             (Run("fanout.py", ("--publish-concurrency", "1"), ("--publish-concurrency", "1", *_FANOUT_QUICK), 240),),
             (Figure("deliveries/s", "rate", _rate, ">=", 2, "≥ 2x", client_bound=True),
              Figure("CPU/delivery", "cpu_per_delivery", common.fmt_us, "<=", 0.5, "≤ 0.5x"),
              Figure("p99 latency", "p99", common.fmt_us, "<=", 0.25, "≤ 0.25x", client_bound=True))),
    Scenario("ws_1pub", "fan-out to 1,000 WebSockets, one publisher waiting for each answer",
             (Run("fanout.py", ("--mode", "ws", "--publish-concurrency", "1"),
                  ("--mode", "ws", "--publish-concurrency", "1", *_FANOUT_QUICK), 240),),
             (Figure("deliveries/s", "rate", _rate, client_bound=True),
              Figure("CPU/delivery", "cpu_per_delivery", common.fmt_us),
              Figure("p99 latency", "p99", common.fmt_us, client_bound=True))),
    Scenario("woh_1pub", "fan-out to 1,000 WebSocket-over-HTTP clients, 50 publishes, one publisher",
             (Run("fanout.py", ("--mode", "woh", "--publish-concurrency", "1", "--messages", "50"),
                  ("--mode", "woh", "--publish-concurrency", "1", "--connections", "500", "--messages", "30"), 240),),
             (Figure("deliveries/s", "rate", _rate, ">=", 5, "≥ 5x", client_bound=True),
              Figure("CPU/delivery", "cpu_per_delivery", common.fmt_us),
              Figure("RSS/held conn", "rss_per_conn", common.fmt_kb))),
    Scenario("many_2pub", "1,000 channels, one stream each, 30 rounds in POSTs of 100 items from 2 publishers",
             (Run("fanout.py", ("--many-channels", "--publish-concurrency", "2"),
                  ("--many-channels", "--publish-concurrency", "2", "--connections", "500", "--messages", "10"), 240),),
             (Figure("deliveries/s", "rate", _rate, ">=", 1.5, "≥ 1.5x", client_bound=True),
              Figure("CPU/delivery", "cpu_per_delivery", common.fmt_us, "<=", 0.67, "≤ 0.67x"),
              Figure("lost", "lost", _count, "==", 0, "0 (pushpin-tx)", absolute=True))),
    Scenario("zmq_push", "fan-out to 1,000 streams, 200 single-item ZMQ PUSH messages",
             (Run("fanout.py", ("--input", "zmq"), ("--input", "zmq", *_FANOUT_QUICK), 240),),
             (Figure("deliveries/s", "rate", _rate, client_bound=True),
              Figure("CPU/delivery", "cpu_per_delivery", common.fmt_us),
              Figure("p99 latency", "p99", common.fmt_us, client_bound=True))),
    Scenario("flood_http", "publish flood: 200,000 items in POSTs of 1,000 to 100 streams (own channels), one publisher",
             (Run("fanout.py", ("--many-channels", "--unlimited", "--connections", "100", "--messages", "2000",
                                "--batch", "1000", "--publish-concurrency", "1"),
                  ("--many-channels", "--unlimited", "--connections", "100", "--messages", "500",
                   "--batch", "1000", "--publish-concurrency", "1"), 240),),
             (Figure("accepted in", "publish_s", _seconds, "<=", 10, "≤ 10 s", absolute=True),
              Figure("lost", "lost", _count, "==", 0, "0 (pushpin-tx)", absolute=True),
              Figure("deliveries/s", "rate", _rate, client_bound=True))),
    Scenario("flood_zmq", "publish flood: 200,000 single-item ZMQ PUSH messages to 100 streams (own channels)",
             (Run("fanout.py", ("--many-channels", "--unlimited", "--input", "zmq", "--connections", "100",
                                "--messages", "2000"),
                  ("--many-channels", "--unlimited", "--input", "zmq", "--connections", "100", "--messages", "500"),
                  240),),
             (Figure("delivered after last send", "tail_s", _seconds, "<=", 8, "≤ 8 s", absolute=True),
              Figure("lost", "lost", _count, "==", 0, "0 (pushpin-tx)", absolute=True),
              Figure("deliveries/s", "rate", _rate, client_bound=True))),
    Scenario("setup_stream", "set-up of held streams with 1,000 to 15,000 already held",
             (Run("setup_cost.py", (), ("--levels", "1000,5000", "--probe", "500"), 420),),
             (Figure("opened/s", "rate", _rate, ">=", 3, "≥ 3x", client_bound=True),
              Figure("CPU/stream", "cpu_per_conn", common.fmt_us),
              Figure("CPU growth to 15k held", "growth", _times, "<=", 1.1, "≤ 1.1x", absolute=True))),
    Scenario("setup_ws", "set-up of WebSockets with 1,000 to 15,000 already held",
             (Run("setup_cost.py", ("--mode", "ws"), ("--mode", "ws", "--levels", "1000,5000", "--probe", "500"), 420),),
             (Figure("opened/s", "rate", _rate, ">=", 2, "≥ 2x", client_bound=True),
              Figure("CPU/WebSocket", "cpu_per_conn", common.fmt_us),
              Figure("CPU growth to 15k held", "growth", _times, "<=", 1.1, "≤ 1.1x", absolute=True))),
    Scenario("scaleout_redis", "scale-out: one publisher, 3 instances x 1,000 streams via Redis vs 1 x 3,000 (50 msg/s)",
             (Run("scaleout.py", ("--pace", "50", "--only", "one,redis"),
                  ("--pace", "50", "--only", "one,redis", "--connections", "500", "--messages", "100"), 420,
                  pushpin_tx_only=True),),
             (Figure("deliveries/s", "rate", _rate, client_bound=True),
              Figure("CPU/delivery", "cpu_per_delivery", common.fmt_us, "<=", 2, "≤ 2x"),
              Figure("p99 latency", "p99", common.fmt_us, client_bound=True),
              Figure("lost", "lost", _count, "==", 0, "0 (pushpin-tx)", absolute=True)),
             candidate=(0, "redis"), baseline=(0, "one"), candidate_label="3 x N, Redis", baseline_label="1 x 3N"),
    Scenario("scaleout_zmq", "scale-out: one publisher, 3 instances x 1,000 streams via a ZMQ broker vs 1 x 3,000 (50 msg/s)",
             (Run("scaleout.py", ("--pace", "50", "--only", "one,zmq"),
                  ("--pace", "50", "--only", "one,zmq", "--connections", "500", "--messages", "100"), 420,
                  pushpin_tx_only=True),),
             (Figure("deliveries/s", "rate", _rate, client_bound=True),
              Figure("CPU/delivery", "cpu_per_delivery", common.fmt_us, "<=", 2, "≤ 2x"),
              Figure("p99 latency", "p99", common.fmt_us, client_bound=True),
              Figure("lost", "lost", _count, "==", 0, "0 (pushpin-tx)", absolute=True)),
             candidate=(0, "zmq"), baseline=(0, "one"), candidate_label="3 x N, ZMQ broker", baseline_label="1 x 3N"),
    Scenario("workers", "worker scaling: HTTP-stream burst, proxy unpinned, pushpin-tx 2 workers vs 1",
             tuple(Run("fanout.py", ("--unpinned", "--workers", n, *_WORKERS_FULL),
                       ("--unpinned", "--workers", n, *_WORKERS_QUICK), 240, pushpin_tx_only=True) for n in ("2", "1")),
             (Figure("deliveries/s", "rate", _rate, ">=", 1.7, "≥ 1.7x", client_bound=True),
              Figure("CPU/delivery", "cpu_per_delivery", common.fmt_us)),
             candidate=(0, "pushpin-tx"), baseline=(1, "pushpin-tx"),
             candidate_label="2 workers", baseline_label="1 worker"),
    Scenario("workers_get", "worker scaling: proxied GET, proxy unpinned, pushpin-tx 2 workers vs 1",
             tuple(Run("proxy_get.py", ("--unpinned", "--workers", n),
                       ("--unpinned", "--workers", n, "--seconds", "3", "--warmup", "1"), 180,
                       pushpin_tx_only=True) for n in ("2", "1")),
             (Figure("req/s", "rps", _rate, ">=", 1.7, "≥ 1.7x", client_bound=True),
              Figure("CPU/request", "cpu_per_req", common.fmt_us)),
             candidate=(0, "pushpin-tx"), baseline=(1, "pushpin-tx"),
             candidate_label="2 workers", baseline_label="1 worker"),
)

BY_NAME = {s.name: s for s in SCENARIOS}
LABEL = {"pushpin-tx": "pushpin-tx", "pushpin": "Pushpin"}
#: result keys that are pushpin-tx runs (scaleout.py names its layouts: one instance, via Redis, via ZMQ)
OURS = {"pushpin-tx", "one", "redis", "zmq"}


# --- running ------------------------------------------------------------------------------------


@dataclass
class Outcome:
    """What one run left: its exit status, its JSON (None if it wrote none), its log."""

    argv: list[str]
    returncode: int | None
    data: dict[str, Any] | None
    seconds: float
    log: Path
    timed_out: bool = False

    def result(self, target: str) -> dict[str, Any] | None:
        """The per-target figures of C{target} in this run, if it ran."""
        return None if self.data is None else self.data["results"].get(target)


def run_script(run: Run, args: argparse.Namespace, log: Path, json_path: Path) -> Outcome:
    """Run one script with a deadline; its output goes to C{log} (and to stdout with --verbose)."""
    targets = "pushpin-tx" if run.pushpin_tx_only else args.targets
    argv = [sys.executable, str(HERE / run.script), *(run.quick_args if args.quick else run.args),
            "--targets", targets, "--loglevel", str(args.loglevel), "--json", str(json_path)]
    timeout = run.timeout / (2 if args.quick else 1)
    json_path.unlink(missing_ok=True)
    t0 = time.monotonic()
    timed_out = False
    # its own session, so the script's SIGTERM handler stops its proxies and load itself;
    # PR_SET_PDEATHSIG (in preexec) ends it if this script is killed outright
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
                            preexec_fn=common.preexec(common.ALL_CPUS, 4096))
    assert proc.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    try:
        with open(log, "wb") as out:
            out.write(("$ " + " ".join(argv[1:]) + "\n").encode())
            while True:
                left = t0 + timeout - time.monotonic()
                if left <= 0:
                    timed_out = True
                    break
                if not sel.select(min(left, 1.0)):
                    if proc.poll() is not None:
                        break  # ended, though something it started still holds the pipe open
                    continue
                chunk = os.read(proc.stdout.fileno(), 65536)
                if not chunk:
                    break
                out.write(chunk)
                out.flush()
                if args.verbose:
                    sys.stdout.buffer.write(chunk)
                    sys.stdout.flush()
    finally:
        sel.close()
        common.stop_process(proc)  # at once if it has ended; else SIGTERM, then SIGKILL to its group
        proc.stdout.close()
    try:
        data = json.loads(json_path.read_text())
    except (OSError, ValueError):
        data = None
    return Outcome(argv, proc.returncode, data, time.monotonic() - t0, log, timed_out)


# --- the summary -----------------------------------------------------------------------------------


def value(result: dict[str, Any] | None, key: str) -> float | None:
    """Figure C{key} of one side's result (C{lost} is computed), None when absent."""
    if result is None:
        return None
    if key == "lost":
        return result["expected"] - result["delivered"]
    v = result.get(key)
    return None if v is None else float(v)


def load_share(result: dict[str, Any]) -> tuple[float | None, float | None]:
    """(load generator CPU / its window, proxy tree CPU / the same kind of window) of one result."""
    if "load_wall" in result:  # fanout
        load = result["load_cpu"] / result["load_wall"] if result["load_wall"] else None
        proxy = result["proxy_cpu"] / result["burst_wall"] if result["burst_wall"] else None
    elif "wall" in result:  # proxy_get
        load = result["load_cpu"] / result["wall"] if result["wall"] else None
        proxy = result["server_cpu"] / result["sample_wall"] if result["sample_wall"] else None
    else:  # scaleout: the load's CPU over the run's seconds; the instances' is not one core's
        load = result["load_cpu"] / result["seconds"] if result.get("seconds") else None
        proxy = None
    return load, proxy


def problems_of(result: dict[str, Any]) -> list[str]:
    """The correctness failures one side's result reports (both scripts list them as C{problems})."""
    return list(result.get("problems", []))


def verdict(fig: Figure, cand: float | None, base: float | None) -> tuple[str, str]:
    """(ratio text, met text) of one figure."""
    ratio = cand / base if cand is not None and base else None
    ratio_text = "-" if ratio is None else f"{ratio:.2f}x"
    checked = cand if fig.absolute else ratio
    if fig.op is None or fig.target is None:
        return ratio_text, ""
    if checked is None:
        return ratio_text, "-"
    ok = {">=": checked >= fig.target, "<=": checked <= fig.target, "==": checked == fig.target}[fig.op]
    return ratio_text, "yes" if ok else "no"


def summarize(chosen: list[Scenario], outcomes: dict[str, list[Outcome]]) -> tuple[list[list[str]], list[str], bool]:
    """The table rows, the per-scenario lines, and whether pushpin-tx passed every correctness check."""
    rows: list[list[str]] = []
    lines: list[str] = []
    ok = True
    for sc in chosen:
        runs = outcomes[sc.name]
        side = {"cand": runs[sc.candidate[0]].result(sc.candidate[1]),
                "base": runs[sc.baseline[0]].result(sc.baseline[1])}
        saturated = []
        for name, r in side.items():
            if r is not None:
                load, _ = load_share(r)
                if load is not None and load >= SATURATED:
                    saturated.append(sc.candidate_label if name == "cand" else sc.baseline_label)
        for fig in sc.figures:
            cand, base = value(side["cand"], fig.key), value(side["base"], fig.key)
            ratio_text, met = verdict(fig, cand, base)
            if met in ("yes", "no") and fig.client_bound and saturated:
                met += " (load gen saturated)"
            cand_text, base_text = fig.fmt(cand), fig.fmt(base) if side["base"] is not None else "-"
            if sc.candidate[1] == sc.baseline[1]:  # the same proxy both sides (workers): say which is which
                cand_text += f" ({sc.candidate_label})"
                base_text += f" (pushpin-tx, {sc.baseline_label})"
            rows.append([sc.name, fig.label, cand_text, base_text, ratio_text if not fig.absolute else "-",
                         fig.target_text or "-", met])
        # one line per scenario: load generator CPU and the correctness verdict of every run and target
        load_parts, check_parts = [], []
        for i, out in enumerate(runs):
            tag = f" ({sc.candidate_label if i == sc.candidate[0] else sc.baseline_label})" if len(runs) > 1 else ""
            if out.data is None:
                why = "timed out" if out.timed_out else f"exit {out.returncode}, no figures"
                check_parts.append(f"run {i + 1}{tag} FAILED ({why}; log {out.log})")
                ok = False
                continue
            for target, r in out.data["results"].items():
                load, proxy = load_share(r)
                name = LABEL.get(target, target) + tag
                load_parts.append(f"{name} {_pct(load)} (proxy {_pct(proxy)})")
                problems = problems_of(r)
                if problems:
                    check_parts.append(f"{name} FAIL: " + "; ".join(p.splitlines()[0] for p in problems[:3]))
                    if target in OURS:
                        ok = False
                else:
                    check_parts.append(f"{name} ok")
            if not out.data["results"]:
                check_parts.append(f"run {i + 1}{tag}: no target ran (log {out.log})")
                ok = False
            elif not OURS & set(out.data["results"]):
                check_parts.append(f"run {i + 1}{tag}: pushpin-tx did not run (log {out.log})")
                ok = False
        check_name = "errors" if sc.name == "proxy_get" else "exactly once, in order"
        lines.append(f"- **{sc.name}**, {sc.title}. Load gen CPU (and proxy tree CPU) over the measured window: "
                     f"{', '.join(load_parts) or '-'}. {check_name.capitalize()}: {', '.join(check_parts) or '-'}."
                     + _workers_note(runs))
    return rows, lines, ok


def _workers_note(runs: list[Outcome]) -> str:
    """For runs of pushpin-tx with workers > 1: how many processes listened on the client port."""
    parts = []
    for out in runs:
        r = out.result("pushpin-tx")
        if r is not None and (r.get("workers") or 1) > 1:
            short = " (this build ignores [runner] workers?)" if r["listening"] < r["workers"] else ""
            parts.append(f"workers={r['workers']}: {r['listening']} processes listening on the client port{short}")
    return (" " + "; ".join(parts) + ".") if parts else ""



def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.0f} %"


# --- main ------------------------------------------------------------------------------------------------


def main() -> int:
    """Run the chosen scenarios, print the summary; the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--targets", default="pushpin-tx,pushpin",
                        help="pushpin-tx, or pushpin-tx,pushpin (Pushpin is skipped when not installed)")
    parser.add_argument("--quick", action="store_true", help="smaller, shorter runs (noisier figures)")
    parser.add_argument("--only", metavar="SCENARIO[,...]",
                        help="run only these: " + ", ".join(s.name for s in SCENARIOS))
    parser.add_argument("--loglevel", type=int, default=2, help="log_level of both proxies in every run")
    parser.add_argument("--log-dir", help="where each run's full output goes (default: a new temporary directory)")
    parser.add_argument("--verbose", action="store_true", help="also show each run's full output as it comes")
    parser.add_argument("--json", metavar="FILE", help="also write the summary and every run's figures as JSON")
    args = parser.parse_args()
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    if "pushpin-tx" not in targets or not set(targets) <= {"pushpin-tx", "pushpin"}:
        parser.error("--targets: pushpin-tx, or pushpin-tx,pushpin")
    if "pushpin" in targets and not proxies.pushpin_installed():
        print(f"note: {proxies.PUSHPIN_BIN} is not installed: pushpin-tx only, no ratios", file=sys.stderr)
        targets.remove("pushpin")
    args.targets = ",".join(targets)
    chosen = list(SCENARIOS)
    if args.only:
        names = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = [n for n in names if n not in BY_NAME]
        if unknown:
            parser.error(f"--only: unknown scenario(s) {unknown}; choose from {', '.join(BY_NAME)}")
        chosen = [BY_NAME[n] for n in names]
    log_dir = Path(args.log_dir) if args.log_dir else Path(tempfile.mkdtemp(prefix="bench-run-all-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    common.exit_on_sigterm()

    machine = common.machine_note()
    print(f"# run_all: {', '.join(s.name for s in chosen)}{' (--quick)' if args.quick else ''}; "
          f"targets {args.targets}; log_level {args.loglevel}")
    print(f"# {machine}")
    print(f"# each run's full output: {log_dir}", flush=True)
    outcomes: dict[str, list[Outcome]] = {}
    t_all = time.monotonic()
    for sc in chosen:
        outcomes[sc.name] = []
        for i, run in enumerate(sc.runs):
            suffix = f"-{i + 1}" if len(sc.runs) > 1 else ""
            out = run_script(run, args, log_dir / f"{sc.name}{suffix}.txt", log_dir / f"{sc.name}{suffix}.json")
            outcomes[sc.name].append(out)
            state = ("timed out" if out.timed_out else f"exit {out.returncode}") + ("" if out.data else ", no figures")
            print(f"  {sc.name}{suffix}: {out.seconds:.0f} s, {state}", file=sys.stderr, flush=True)

    rows, lines, ok = summarize(chosen, outcomes)
    print()
    workers = ("; workers, workers_get: 2 workers ÷ 1, proxy unpinned"
               if "workers" in outcomes or "workers_get" in outcomes else "")
    print(f"Summary (ratio = pushpin-tx ÷ Pushpin, each on the same single core, one worker{workers}; "
          f"{time.monotonic() - t_all:.0f} s in all)")
    print()
    print(common.format_table(["scenario", "figure", "pushpin-tx", "Pushpin", "ratio", "target", "met"], rows,
                              left=2))
    print()
    print("\n".join(lines))
    print()
    print("pushpin-tx passed every correctness check" if ok else
          "!!!!! FAIL: pushpin-tx failed a correctness check or a run did not finish (see above and the logs)")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "machine": machine, "quick": args.quick, "targets": args.targets, "ok": ok,
            "table": {"headers": ["scenario", "figure", "pushpin-tx", "Pushpin", "ratio", "target", "met"],
                      "rows": rows}, "lines": lines,
            "runs": {name: [{"argv": o.argv[1:], "returncode": o.returncode, "seconds": o.seconds,
                             "timed_out": o.timed_out, "data": o.data} for o in outs]
                     for name, outs in outcomes.items()}}, indent=1))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
