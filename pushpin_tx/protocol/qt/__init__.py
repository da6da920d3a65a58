"""
How Pushpin, a Qt program, reads values: QSettings INI files (L{ini}), JSON documents
(L{jsonvalues}), header parameters (L{headervalues}), integers (L{numbers}) and text, base64
and UTF-8 (L{strings}). Each function names the Qt call whose behaviour it reproduces, and
each Qt call is reproduced once.
"""
