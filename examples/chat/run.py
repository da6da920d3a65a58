"""
Serverless WebSocket chat: C{python3 examples/chat/run.py}, then open http://127.0.0.1:7999/.

Starts the chat function (handler.py) behind C{twistd -n pushpin} on the route
C{* localhost:ORIGIN,over_http}: the proxy keeps the WebSockets, the function only sees
WebSocket-over-HTTP requests.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))

import _launcher  # noqa: E402
import handler  # noqa: E402


def ready(example: _launcher.Example) -> None:
    handler.settings["control_uri"] = example.control_uri


if __name__ == "__main__":
    args = _launcher.options("Serverless WebSocket chat behind pushpin-tx.").parse_args()
    example = _launcher.Example("chat", handler.handler, route_options="over_http")
    sys.exit(_launcher.run(example, args, ready, ["two chat windows: type in one, the message shows in both"]))
