"""
Command-line entry points: C{pushpin-tx-publish} and the worker process.
"""
