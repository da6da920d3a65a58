"""
Reliable streaming: C{python3 examples/reliable/run.py}, then C{curl -N http://127.0.0.1:7999/stream}.

Starts origin.py behind C{twistd -n pushpin --route '* localhost:ORIGIN'}; messages are
added with C{curl -d TEXT http://127.0.0.1:7999/messages}, and C{?publish=no} saves one
without publishing it (a lost publish, or a publisher killed between saving and
publishing). The stream recovers it through its next link, with C{Grip-Last}.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))

import _launcher  # noqa: E402
import origin  # noqa: E402


if __name__ == "__main__":
    parser = _launcher.options("Reliable streaming (ids, prev-id, a Grip-Link recovery endpoint) behind pushpin-tx.")
    parser.add_argument("--link-timeout", type=int, default=10, help="the next link's timeout: seconds without publishes before the proxy asks it (default 10)")
    args = parser.parse_args()
    origin.settings["link_timeout"] = args.link_timeout

    def ready(example):
        origin.settings["control_uri"] = example.control_uri

    hints = [
        "curl -N {base}/stream                          # the stream: ID TEXT lines",
        "curl -d hello {base}/messages                  # saved and published",
        "curl -d lost '{base}/messages?publish=no'      # saved, the publish lost: recovered with Grip-Last",
    ]
    sys.exit(_launcher.run(_launcher.Example("reliable", origin.handler), args, ready, hints))
