"""
pyzmq in the reactor: the socket reader, the PULL/SUB/command inputs and the stats PUB socket.
"""
