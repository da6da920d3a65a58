"""
twistd plugin: C{twistd -n pushpin [--config pushpin.conf]}.

Kept import-light on purpose: twistd imports every plugin file to list them, so the real
work lives in L{pushpin_tx.tap}, imported only when this plugin is used.
"""

from twisted.application.service import ServiceMaker

pushpin = ServiceMaker(
    "pushpin-tx",
    "pushpin_tx.tap",
    "A realtime reverse proxy speaking Pushpin's GRIP protocols.",
    "pushpin",
)
