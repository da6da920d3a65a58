"""
Streaming historical data: C{python3 examples/history/run.py}, then
C{curl -N http://127.0.0.1:7999/stream}: 10,000 records of history in one response,
fetched from the origin page by page, then live records (C{curl -d TEXT
http://127.0.0.1:7999/records}).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))

import _launcher  # noqa: E402
import origin  # noqa: E402


if __name__ == "__main__":
    parser = _launcher.options("Streaming historical data (a big body in pages, then live) behind pushpin-tx.")
    parser.add_argument("--history", type=int, default=10000, help="records of history (default 10000)")
    parser.add_argument("--page-size", type=int, default=2000, help="records per page the origin serves (default 2000)")
    args = parser.parse_args()
    origin.make_history(args.history)
    origin.settings["page_size"] = args.page_size

    def ready(example):
        origin.settings["control_uri"] = example.control_uri

    hints = [
        "curl -N {base}/stream              # the history, then live records",
        "curl -d 'reading 21.5' {base}/records   # a live record",
    ]
    sys.exit(_launcher.run(_launcher.Example("history", origin.handler), args, ready, hints))
