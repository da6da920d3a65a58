"""
Pure Pushpin formats and rules: no Twisted, no sockets, no clock. Everything here is a function
or a frozen value, tested table by table.
"""
