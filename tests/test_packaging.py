"""
What a non-editable install (the README's first command) puts on disk: every package of
pushpin_tx and every data file it reads. A package missing from setup.cfg imports fine from
the checkout, so only this test (or a user) would notice.
"""

from __future__ import annotations

import configparser
import pathlib

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _options() -> configparser.SectionProxy:
    parser = configparser.ConfigParser()
    parser.read(ROOT / "setup.cfg")
    return parser["options"]


def test_every_package_is_listed_in_setup_cfg() -> None:
    """Each directory of pushpin_tx with an __init__.py is a package setup.cfg installs."""
    listed = {line.strip() for line in _options()["packages"].splitlines() if line.strip()}
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "pushpin_tx").rglob("__init__.py")}
    assert found - listed == set()
    assert "twisted.plugins" in listed  # the twistd plugin, next to Twisted's own


def test_every_data_file_is_package_data() -> None:
    """The non-Python files pushpin_tx reads at run time (internal.conf, the status page) are package data."""
    parser = configparser.ConfigParser()
    parser.read(ROOT / "setup.cfg")
    globs = {key: value.split() for key, value in parser["options.package_data"].items()}
    data = [p for p in (ROOT / "pushpin_tx").rglob("*")
            if p.is_file() and p.suffix not in (".py", ".pyc") and "__pycache__" not in p.parts]
    missing = []
    for path in data:
        package = ".".join(path.parent.relative_to(ROOT).parts)
        owner = package
        while owner and not any(path.match(str(ROOT / owner.replace(".", "/") / g)) for g in globs.get(owner, [])):
            owner = owner.rpartition(".")[0]
        if not owner:
            missing.append(str(path.relative_to(ROOT)))
    assert missing == []
