"""Origins written with the libraries of Pushpin's ecosystem, behind the real twistd -n pushpin."""
