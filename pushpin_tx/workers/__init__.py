"""
The main process's side of C{workers = N}: the worker pool and what it shares with workers.
"""
