"""
Moving from polling to long-polling: C{python3 examples/longpoll/run.py}, then open
http://127.0.0.1:7999/ (or C{curl 'http://127.0.0.1:7999/messages?after=0'}, which waits).

Starts origin.py behind C{twistd -n pushpin --route '* localhost:ORIGIN'};
C{--polling} runs the endpoint as it was before the four long-poll lines.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))

import _launcher  # noqa: E402
import origin  # noqa: E402


if __name__ == "__main__":
    parser = _launcher.options("A polled REST endpoint turned into a long-poll behind pushpin-tx.")
    parser.add_argument("--polling", action="store_true", help="without the long-poll lines: plain polling, as before")
    args = parser.parse_args()
    origin.settings["long_poll"] = not args.polling

    def ready(example):
        origin.settings["control_uri"] = example.control_uri

    hints = [
        "curl '{base}/messages?after=0'       # waits (up to 20 s) for a message",
        "curl -d hello {base}/messages        # answers it",
    ]
    sys.exit(_launcher.run(_launcher.Example("longpoll", origin.handler), args, ready, hints))
