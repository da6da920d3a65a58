"""
Operations: the console, metrics, log lines, the routes-file watcher.
"""
