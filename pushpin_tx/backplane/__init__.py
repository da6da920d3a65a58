"""
Scale-out engines: what makes several pushpin-tx instances serve as one. C{redis} is the
Redis backplane (C{[handler] backplane=redis://...}) over the small RESP3 client in
C{resp}; C{broker} is Pushpin's source/edge ZeroMQ broker (C{pushpin-tx-broker}).
"""
