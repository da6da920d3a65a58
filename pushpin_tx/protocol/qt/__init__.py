"""
How Pushpin, a Qt program, reads values: QSettings INI files, QJson values, header parameters.
Each function names the Qt call whose behaviour it reproduces.
"""
