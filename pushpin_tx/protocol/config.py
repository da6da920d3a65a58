# -*- test-case-name: tests.protocol.test_config -*-
"""
Parse Pushpin 1.36's pushpin.conf into one frozen Settings value.

pushpin-tx promises that an existing Pushpin config works unchanged, so this module follows
Pushpin's own readers (src/core/settings.cpp, the runner, proxy and handler apps): the QSettings
INI dialect, `[global] include=` fallbacks, `{libdir}`/`{rundir}`/`{ipc_prefix}` substitution,
`port_offset` on `tcp://` specs and on `push_in_http_port`, and the *code* defaults for absent
keys. It also applies the runner's command-line overrides (--port, --id, --route, --loglevel).

Where Pushpin is lax we are strict, because a silent misreading is worse than a clear start-up
error: booleans must be true/false/1/0, integers must parse, listen addresses must be IP
literals with ports 0-65535 (0: any free port, logged once bound - our extension, handy for
tests and side-by-side runs), and unreadable files are errors (QSettings ignores them).

Pure: it reads the config files (and key files) and returns values. Things worth logging come
back as data (`not_applicable`, `not_implemented`, `unknown`), never as log calls.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import os
import re
import tempfile
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from pushpin_tx.protocol import configkeys as _keys
from pushpin_tx.protocol.qt.ini import IniSyntaxError, IniValue, parse_ini
from pushpin_tx.protocol.qt.strings import to_utf8

__all__ = [
    "NOT_IMPLEMENTED_KEYS", "ConfigCheck", "ConfigError", "ConfigProblem", "ForwardedForRule",
    "ListenAddress", "LocalPort", "Settings", "SigningKey", "check_settings", "load_settings",
    "parse_forwarded_for", "parse_listen", "parse_local_port", "parse_signing_key",
]

def quote_endpoint_argument(value: str) -> str:
    """
    Escape a value for a Twisted endpoint description, as
    C{twisted.internet.endpoints.quoteStringArgument} does (backslash and colon); repeated
    here so that this pure layer imports no Twisted (tests check the two agree).
    """
    return value.replace("\\", "\\\\").replace(":", "\\:")


LIBDIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data")

# Keys we read but do not honour yet; reported when set to a non-default value. The lead
# shrinks this set as features land.
NOT_IMPLEMENTED_KEYS: frozenset[tuple[str, str]] = frozenset({
    ("proxy", "sockjs_url"), ("proxy", "max_open_requests"),
})

_T = TypeVar("_T")
_TCP_PORT = re.compile(r"(tcp://(?:\[[^\]]*\]|[^:/\[\],\s]*):)([0-9]+)")
# ASCII only: str.isdigit() and \d also accept digits int() cannot parse, such as "²"
_INT = re.compile(r"[+-]?[0-9]+")
_DIGITS = re.compile(r"[0-9]+")


class ConfigError(Exception):
    """The configuration cannot be used; str() names the file, [section] key and bad value."""


@dataclass(frozen=True, slots=True)
class ListenAddress:
    """A TCP listen address; host "" means all interfaces."""

    host: str
    port: int

    def endpoint(self) -> str:
        """The twisted server endpoint string, e.g. "tcp:7999:interface=127.0.0.1"."""
        if not self.host:
            return f"tcp:{self.port}"
        return f"tcp:{self.port}:interface={quote_endpoint_argument(self.host)}"


@dataclass(frozen=True, slots=True)
class LocalPort:
    """
    A Unix-socket client listener (C{local_ports}): the socket file, and the mode (octal in
    the config), owner and group given to it once bound (1.37's C{?mode=&user=&group=}).
    """

    path: str
    mode: int | None = None
    user: str | None = None
    group: str | None = None


@dataclass(frozen=True, slots=True)
class ForwardedForRule:
    """How to rewrite X-Forwarded-For; the empty rule passes the header through unchanged."""

    truncate: int | None = None  # None: keep all existing values; N: keep the last N
    append: bool = False


@dataclass(frozen=True, slots=True, repr=False)
class SigningKey:
    """A JWT key: an HS256 shared secret, or the PEM bytes of an EC (ES256) / RSA (RS256) key."""

    algorithm: str
    key: bytes

    def __repr__(self) -> str:
        """Never shows the key material: reprs end up in logs."""
        return f"SigningKey({self.algorithm}, <redacted>)"


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything pushpin-tx takes from pushpin.conf and the command line."""

    config_path: str | None
    config_dir: str
    libdir: str
    rundir: str
    ipc_prefix: str
    port_offset: int
    stats_connection_ttl: int
    # [runner]
    http_ports: tuple[ListenAddress, ...]
    https_ports: tuple[ListenAddress, ...]
    local_ports: tuple[LocalPort, ...]
    #: where the https ports' certificates are: C{<config dir>/runner/certs}, as Pushpin
    certs_dir: str
    log_level: int
    client_buffer_size: int
    client_maxconn: int
    #: permessage-deflate on client WebSockets (1.37)
    allow_compression: bool
    #: HTTP/2 offered by ALPN on the https ports (pushpin-tx extension, default true; HTTP/1.1 is
    #: always offered too, and plain ports are HTTP/1.x whatever this says)
    http2: bool
    #: reactor processes serving clients (pushpin-tx extension; 1: everything in one process)
    workers: int
    # [proxy]
    routesfile: str
    debug: bool
    auto_cross_origin: bool
    accept_x_forwarded_protocol: bool
    set_x_forwarded_protocol: str
    x_forwarded_for: ForwardedForRule
    x_forwarded_for_trusted: ForwardedForRule
    orig_headers_need_mark: tuple[str, ...]
    accept_pushpin_route: bool
    log_from: bool
    log_user_agent: bool
    sig_iss: str
    sig_key: SigningKey
    upstream_key: SigningKey | None
    sockjs_url: str
    # [handler]
    push_in_spec: str
    push_in_sub_specs: tuple[str, ...]
    push_in_sub_connect: bool
    push_in_http_addr: str
    push_in_http_port: int  # -1: control API off (key absent, Pushpin's code default)
    push_in_max_headers_size: int
    push_in_max_body_size: int
    #: control API credentials (pushpin-tx extension, issue 18; all off by default): the JWT
    #: verification key (HS256 secret, or file: a PEM key, RS256/ES256), the issuer a token
    #: must name ("" any), and the htpasswd-style file of Basic users (user:bcrypt-hash lines)
    push_in_http_auth_key: SigningKey | None
    push_in_http_auth_iss: str
    push_in_http_auth_basic: str | None
    #: CURVE on the ZeroMQ inputs (pushpin-tx extension): the server secret key file and
    #: the allowed client public keys file (one Z85 key a line); None: plain ZeroMQ
    push_in_curve_secret_key: str | None
    push_in_curve_clients: str | None
    stats_spec: str
    command_spec: str
    message_rate: int
    message_hwm: int
    message_block_size: int | None
    message_wait: int
    id_cache_ttl: int
    connection_subscription_max: int
    subscription_linger: int
    #: Pushpin 1.41's key (1.36 always does it): a second after a channel's first subscriber,
    #: re-ask its long-polls and recover its streams (pushpin_tx.core.first_subscription)
    update_on_first_subscription: bool
    stats_subscription_ttl: int
    stats_report_interval: int
    stats_format: str
    prometheus_port: str | None
    prometheus_prefix: str
    # our extension keys
    delivery_queue_max: int
    delivery_overflow: str
    delivery_pending_max: int  # bytes of deliveries waiting to be written before publishers are held back (0: no bound)
    backplane: str  # "" (off) or redis://[user:password@]host[:port][/db], rediss:// for TLS
    # [console] (ours): the operator's manhole console, off unless ssh_endpoint is set
    console_ssh_endpoint: str | None
    console_authorized_keys: str | None
    console_passwd: str | None
    console_telnet_endpoint: str | None
    console_host_key: str
    console_allow_remote: bool
    # command-line overrides
    routes_override: tuple[str, ...] | None
    # start-up diagnostics
    not_applicable: tuple[str, ...]
    not_implemented: tuple[str, ...]
    unknown: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    """One thing wrong with a config: the file and line (when known), the key, what is wrong.

    C{file} is "" for a command-line option; C{section} and C{key} are None for a problem that
    belongs to no key (an unreadable file, a line that is not C{key=value}).
    """

    file: str
    line: int | None
    section: str | None
    key: str | None
    message: str

    def location(self) -> str:
        """C{FILE:LINE}, C{FILE}, or C{command line}."""
        if not self.file:
            return "command line"
        return f"{self.file}:{self.line}" if self.line else self.file

    def error_text(self) -> str:
        """The text load_settings' ConfigError has for this problem (no line number)."""
        if self.key is None:
            return f"{self.file}: {self.message}" if self.file else self.message
        return f"{self.file}: [{self.section or 'General'}] {self.key}: {self.message}"

    def __str__(self) -> str:
        """C{FILE:LINE: [section] key: message}, the form check_settings' callers print."""
        if self.key is None:
            return f"{self.location()}: {self.message}"
        return f"{self.location()}: [{self.section or 'General'}] {self.key}: {self.message}"


@dataclass(frozen=True, slots=True)
class ConfigCheck:
    """What check_settings found: the settings it could build, and every problem on the way."""

    #: the settings with each bad key at its default; None when the file could not be read
    settings: Settings | None
    problems: tuple[ConfigProblem, ...]
    #: where each key the files set is: "[section] key" (Settings' diagnostic labels) -> file, line
    locations: dict[str, tuple[str, int]]


def check_settings(config_path: str | None, *, port: str | None = None,
                   instance_id: int | None = None, routes: Sequence[str] | None = None,
                   log_level: int | None = None, workers: int | None = None) -> ConfigCheck:
    """Read a config like load_settings, but note every problem instead of stopping at the first.

    load_settings succeeds exactly when this finds no problem. Each bad key is noted with its
    file and line and read as if it were absent, so later keys are still checked; every line
    that is not a comment, a section header or C{key=value} is noted and skipped.
    """
    mode = _Collect()
    settings = _load(mode, config_path, port=port, instance_id=instance_id, routes=routes,
                     log_level=log_level, workers=workers)
    locations: dict[str, tuple[str, int]] = {}
    for (file, section, key), line in mode.lines.items():  # the main file's, then the include's
        locations.setdefault(f"[{section or 'General'}] {key}", (file, line))
    return ConfigCheck(settings, tuple(mode.problems), locations)


def parse_listen(value: str) -> ListenAddress:
    """Parse "7999", ":7999", "127.0.0.1:7999" or "[::1]:7999" into a ListenAddress."""
    text = value.strip()
    bracketed = re.fullmatch(r"\[([^\]]*)\]:(.*)", text)
    if bracketed:
        host, port_text = bracketed.groups()
    elif ":" not in text:
        host, port_text = "", text
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    else:
        raise ConfigError(f"invalid listen address {value!r} (put an IPv6 address in brackets)")
    if host:
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise ConfigError(
                f"invalid listen address {value!r} (the host must be an IP address)") from None
    return ListenAddress(host, _port(port_text))


def parse_local_port(value: str) -> LocalPort:
    """
    Parse a C{local_ports} entry: a path, or 1.37's URL form C{unix:/path?mode=660&user=u&group=g}
    (the mode is octal, as Pushpin's runner reads it with C{toInt(&ok, 8)}; the path is
    percent-decoded, as C{QUrl::fromEncoded} does).
    """
    text = value.strip()
    if text.startswith("unix:"):
        text = text[len("unix:"):]
    path_text, _, query = text.partition("?")
    path = urllib.parse.unquote(path_text)
    if not path:
        raise ConfigError(f"invalid local port {value!r}")
    params = dict(urllib.parse.parse_qsl(query, keep_blank_values=True))
    mode = None
    if "mode" in params:
        if not re.fullmatch(r"[0-7]+", params["mode"]):
            raise ConfigError(f"invalid mode {params['mode']!r} in {value!r} (octal, e.g. 660)")
        mode = int(params["mode"], 8)
    return LocalPort(path, mode, params.get("user") or None, params.get("group") or None)


def parse_forwarded_for(value: str) -> ForwardedForRule:
    """Parse an x_forwarded_for rule such as "truncate:0,append", "append" or ""."""
    return _forwarded_for(value.split(","))


def parse_signing_key(value: str, base_dir: str) -> SigningKey:
    """Parse "secret", "base64:..." or "file:path.pem" (relative to base_dir)."""
    return _signing_key(value, base_dir, need_private=False)


def load_settings(config_path: str | None, *, port: str | None = None,
                  instance_id: int | None = None, routes: Sequence[str] | None = None,
                  log_level: int | None = None, workers: int | None = None) -> Settings:
    """Read pushpin.conf (None: the embedded default) and apply the runner's overrides."""
    settings = _load(_Strict(), config_path, port=port, instance_id=instance_id,
                     routes=routes, log_level=log_level, workers=workers)
    assert settings is not None  # the strict mode raises instead
    return settings


def _load(mode: _Strict, config_path: str | None, *, port: str | None,
          instance_id: int | None, routes: Sequence[str] | None,
          log_level: int | None, workers: int | None) -> Settings | None:
    """load_settings' body; C{mode} decides whether a problem raises or is noted."""
    if workers is not None and workers < 1:
        mode.problem(ConfigProblem("", None, None, None, f"--workers: must be >= 1, got {workers}"))
        workers = None
    if instance_id is not None and instance_id < 0:
        mode.problem(ConfigProblem("", None, None, None, f"--id: must be >= 0, got {instance_id}"))
        instance_id = None
    if log_level is not None and log_level < 0:
        mode.problem(ConfigProblem("", None, None, None,
                                   f"--loglevel: must be >= 0, got {log_level}"))
        log_level = None
    path = os.path.abspath(config_path or os.path.join(LIBDIR, "pushpin.conf"))
    config_dir = os.path.dirname(path)
    main = mode.read(path, lambda e: f"{path}: cannot read config file: {e}")
    if main is None:
        return None
    cfg = mode.lookup(path, main)
    include = cfg.get_str("global", "include", "")
    if include:
        if include == "internal.conf":  # Pushpin's hack for old configs, kept
            include = "{libdir}/internal.conf"
        # like Settings::Settings, the include path is resolved with the file's own values
        include = os.path.join(config_dir, _base_vars(cfg, config_dir).resolve(include))
        cfg = mode.lookup(path, main, include, mode.read_include(
            include, lambda e: f"{path}: [global] include: cannot read {include!r}: {e}",
            cfg, f"cannot read {include!r}"))
    cfg.vars = base = _base_vars(cfg, config_dir, instance_id)

    if port is not None:  # the runner's --port: one plain HTTP listener, no offset added
        try:
            http_ports: tuple[ListenAddress, ...] = (parse_listen(port),)
        except ConfigError as e:
            mode.problem(ConfigProblem("", None, None, None, f"--port: {e}"))
            http_ports = ()
        https_ports: tuple[ListenAddress, ...] = ()
        local_ports: tuple[LocalPort, ...] = ()
    else:  # Pushpin 1.36 adds no port_offset to client ports (checked on the 1.36.0 binary)
        problems = mode.count()
        http_ports = cfg.get_each("runner", "http_port", parse_listen)
        https_ports = cfg.get_each("runner", "https_ports", parse_listen)
        local_ports = cfg.get_each("runner", "local_ports", parse_local_port)
        # (a bad listen address was reported already: no second message for it)
        if not (http_ports or https_ports or local_ports) and mode.count() == problems:
            mode.problem(cfg.problem("runner", "http_port", "no server ports configured",
                                     origin=path))
    config_log_level = cfg.parse_items("runner", "log_level", _log_level)

    routesfile = cfg.get_str("proxy", "routesfile", "")
    xfp = cfg.get_str("proxy", "set_x_forwarded_protocol", "")
    upstream_key = cfg.get_str("proxy", "upstream_key", "")
    block_size = cfg.get_int("handler", "message_block_size", -1)
    diagnostics = _keys.classify(cfg.keys(), cfg.raw, NOT_IMPLEMENTED_KEYS)
    return Settings(
        config_path=path if config_path else None,
        config_dir=config_dir,
        libdir=LIBDIR,
        rundir=base.rundir,
        ipc_prefix=base.ipc_prefix,
        port_offset=base.port_offset,
        stats_connection_ttl=cfg.get_int("global", "stats_connection_ttl", 120),
        http_ports=http_ports,
        https_ports=https_ports,
        local_ports=local_ports,
        certs_dir=os.path.join(config_dir, "runner", "certs"),
        log_level=config_log_level if log_level is None else log_level,
        client_buffer_size=cfg.get_int("runner", "client_buffer_size", 8192),
        client_maxconn=cfg.parse("runner", "client_maxconn", "",
                                 lambda v: _positive_int(v) if v.strip() else 50000),
        allow_compression=cfg.get_bool("runner", "allow_compression"),
        http2=cfg.parse("runner", "http2", "", lambda v: _bool(v) if v.strip() else True),
        workers=workers if workers is not None else mode.workers(cfg, path),
        routesfile=os.path.normpath(os.path.join(config_dir, routesfile)) if routesfile else "",
        debug=cfg.get_bool("proxy", "debug"),
        auto_cross_origin=cfg.get_bool("proxy", "auto_cross_origin"),
        accept_x_forwarded_protocol=cfg.get_bool("proxy", "accept_x_forwarded_protocol"),
        set_x_forwarded_protocol=xfp if xfp in ("proto-only", "true") else "",
        x_forwarded_for=cfg.parse_items("proxy", "x_forwarded_for", _forwarded_for),
        x_forwarded_for_trusted=cfg.parse_items(
            "proxy", "x_forwarded_for_trusted", _forwarded_for),
        orig_headers_need_mark=cfg.get_list("proxy", "orig_headers_need_mark"),
        accept_pushpin_route=cfg.get_bool("proxy", "accept_pushpin_route"),
        log_from=cfg.get_bool("proxy", "log_from"),
        log_user_agent=cfg.get_bool("proxy", "log_user_agent"),
        sig_iss=cfg.get_str("proxy", "sig_iss", "pushpin"),
        sig_key=cfg.parse("proxy", "sig_key", "",
                          lambda v: _signing_key(v, config_dir, need_private=True)),
        upstream_key=cfg.parse("proxy", "upstream_key", "",
                               lambda v: parse_signing_key(v, config_dir))
        if upstream_key else None,
        sockjs_url=cfg.get_str("proxy", "sockjs_url", ""),
        push_in_spec=cfg.get_str("handler", "push_in_spec", ""),
        push_in_sub_specs=(cfg.get_list("handler", "push_in_sub_specs")
                           + cfg.get_list("handler", "push_in_sub_spec")),  # deprecated name
        push_in_sub_connect=cfg.get_bool("handler", "push_in_sub_connect"),
        push_in_http_addr=cfg.get_str("handler", "push_in_http_addr", ""),
        push_in_http_port=cfg.parse("handler", "push_in_http_port", "",
                                    lambda v: _control_port(v, base.port_offset)),
        push_in_max_headers_size=cfg.get_int_first(
            "handler", ("push_in_max_headers_size", "push_in_http_max_headers_size"), 10000),
        push_in_max_body_size=cfg.get_int_first(
            "handler", ("push_in_max_body_size", "push_in_http_max_body_size"), 1000000),
        push_in_http_auth_key=cfg.parse("handler", "push_in_http_auth_key", "",
                                        lambda v: parse_signing_key(v, config_dir) if v else None),
        push_in_http_auth_iss=cfg.get_str("handler", "push_in_http_auth_iss", ""),
        push_in_http_auth_basic=cfg.parse("handler", "push_in_http_auth_basic", "",
                                          lambda v: _file_value(v, config_dir)),
        push_in_curve_secret_key=cfg.parse("handler", "push_in_curve_secret_key", "",
                                           lambda v: _file_value(v, config_dir)),
        push_in_curve_clients=cfg.parse("handler", "push_in_curve_clients", "",
                                        lambda v: _file_value(v, config_dir)),
        stats_spec=cfg.get_str("handler", "stats_spec", ""),
        command_spec=cfg.get_str("handler", "command_spec", ""),
        message_rate=cfg.get_int("handler", "message_rate", -1),
        message_hwm=cfg.get_int("handler", "message_hwm", -1),
        message_block_size=block_size if block_size > 0 else None,
        message_wait=cfg.get_int("handler", "message_wait", 5000),
        id_cache_ttl=cfg.get_int("handler", "id_cache_ttl", 0),
        connection_subscription_max=cfg.get_int("handler", "connection_subscription_max", 20),
        subscription_linger=cfg.get_int("handler", "subscription_linger", 60),
        # QVariant::toBool with Pushpin's default true: absent is true, an empty value false
        update_on_first_subscription=cfg.parse("handler", "update_on_first_subscription", "true", _bool),
        stats_subscription_ttl=cfg.get_int("handler", "stats_subscription_ttl", 60),
        stats_report_interval=cfg.get_int("handler", "stats_report_interval", 10),
        stats_format=cfg.parse("handler", "stats_format", "", _stats_format),
        # one process serves one metrics endpoint: the handler's, else the proxy's
        prometheus_port=(cfg.get_str("handler", "prometheus_port", "")
                         or cfg.get_str("proxy", "prometheus_port", "")) or None,
        prometheus_prefix=(cfg.get_str("handler", "prometheus_prefix", "")
                           or cfg.get_str("proxy", "prometheus_prefix", "")),
        delivery_queue_max=cfg.parse("handler", "delivery_queue_max", "1000", _positive_int),
        delivery_overflow=cfg.parse("handler", "delivery_overflow", "disconnect", _overflow),
        delivery_pending_max=cfg.parse("handler", "delivery_pending_max", "33554432", _non_negative_int),
        backplane=cfg.parse("handler", "backplane", "", _backplane),
        console_ssh_endpoint=cfg.get_str("console", "ssh_endpoint", "").strip() or None,
        console_authorized_keys=_config_path(config_dir, cfg.get_str("console", "authorized_keys", "")),
        console_passwd=_config_path(config_dir, cfg.get_str("console", "passwd", "")),
        console_telnet_endpoint=cfg.get_str("console", "telnet_endpoint", "").strip() or None,
        console_host_key=os.path.join(config_dir, cfg.get_str("console", "host_key", "console_host_key")),
        console_allow_remote=cfg.get_bool("console", "allow_remote"),
        routes_override=tuple(routes) if routes else None,
        not_applicable=diagnostics[0],
        not_implemented=diagnostics[1],
        unknown=diagnostics[2],
    )


def _file_value(value: str, config_dir: str) -> str | None:
    """A C{file:PATH} value (relative to the config's directory); None when empty."""
    value = value.strip()
    if not value:
        return None
    if not value.startswith("file:") or not value[len("file:"):].strip():
        raise ConfigError("expected file:PATH")
    return os.path.join(config_dir, value[len("file:"):].strip())


def _config_path(config_dir: str, value: str) -> str | None:
    """A file named in the config, relative to the config's directory; None when empty."""
    value = value.strip()
    return os.path.join(config_dir, value) if value else None


# ---- reading and looking up ---------------------------------------------------------------


def _read(path: str, describe: Callable[[str], str]) -> dict[tuple[str, str], IniValue]:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise ConfigError(describe(e.strerror or str(e))) from None
    except UnicodeDecodeError as e:
        raise ConfigError(describe(f"not UTF-8 text ({e.reason})")) from None
    try:
        return parse_ini(text)
    except IniSyntaxError as e:
        raise ConfigError(f"{path}: {e}") from None


@dataclass(frozen=True, slots=True)
class _Vars:
    """The substitution context of Pushpin's Settings::resolveVars."""

    rundir: str
    ipc_prefix: str
    port_offset: int

    def resolve(self, text: str) -> str:
        out = (text.replace("{libdir}", LIBDIR).replace("{rundir}", self.rundir)
               .replace("{ipc_prefix}", self.ipc_prefix))
        if self.port_offset:
            out = _TCP_PORT.sub(lambda m: m[1] + str(int(m[2]) + self.port_offset), out)
        return out


class _Lookup:
    """Typed access to the file's keys, the include's as fallbacks; errors name the origin."""

    def __init__(self, path: str, main: dict[tuple[str, str], IniValue],
                 include_path: str = "",
                 include: dict[tuple[str, str], IniValue] | None = None) -> None:
        self.vars: _Vars | None = None  # None: raw values, as Pushpin reads its base keys
        # file order: the file's own keys, then the include's keys the file does not set
        self._entries = {k: (v, path) for k, v in main.items()}
        for k, v in (include or {}).items():
            self._entries.setdefault(k, (v, include_path))

    def keys(self) -> list[tuple[str, str]]:
        return list(self._entries)

    def raw(self, section: str, key: str) -> IniValue | None:
        """The value, substituted once the base variables are known; None if absent."""
        entry = self._entries.get((section, key))
        if entry is None:
            return None
        value = entry[0]
        resolve: Callable[[str], str] = str
        if self.vars:
            resolve = self.vars.resolve
        return tuple(map(resolve, value)) if isinstance(value, tuple) else resolve(value)

    def fail(self, section: str, key: str, message: str) -> ConfigError:
        origin = self._entries[(section, key)][1]
        return ConfigError(f"{origin}: [{section}] {key}: {message}")

    def line(self, section: str, key: str) -> int | None:
        """The line a key is on; None here (only the collecting lookup keeps lines)."""
        return None

    def problem(self, section: str, key: str, message: str,
                origin: str | None = None) -> ConfigProblem:
        """A problem with a key, located in the file that sets it (else in C{origin})."""
        entry = self._entries.get((section, key))
        file = origin or (entry[1] if entry else "")
        line = self.line(section, key) if entry and entry[1] == file else None
        return ConfigProblem(file, line, section, key, message)

    def get_str(self, section: str, key: str, default: str) -> str:
        value = self.raw(section, key)
        if value is None:
            return default
        if isinstance(value, tuple):
            raise self.fail(section, key, f"expected one value, got the list "
                            f"{','.join(value)!r} (quote a value that contains commas)")
        return value

    def parse(self, section: str, key: str, default: str, parse: Callable[[str], _T]) -> _T:
        text = self.get_str(section, key, default)
        try:
            return parse(text)
        except ConfigError as e:
            if (section, key) not in self._entries:
                raise
            raise self.fail(section, key, str(e)) from None

    def parse_items(self, section: str, key: str, parse: Callable[[Sequence[str]], _T]) -> _T:
        value = self.raw(section, key)
        try:
            return parse((value,) if isinstance(value, str) else value or ())
        except ConfigError as e:
            if (section, key) not in self._entries:
                raise
            raise self.fail(section, key, str(e)) from None

    def get_list(self, section: str, key: str) -> tuple[str, ...]:
        return self.parse_items(section, key, _nonempty)

    def get_each(self, section: str, key: str, parse: Callable[[str], _T]) -> tuple[_T, ...]:
        return self.parse_items(section, key, lambda items: tuple(map(parse, _nonempty(items))))

    def get_int(self, section: str, key: str, default: int) -> int:
        return self.parse(section, key, "", lambda v: _int(v) if v.strip() else default)

    def get_int_first(self, section: str, keys: Sequence[str], default: int) -> int:
        for key in keys:
            if self.raw(section, key) is not None and self.get_str(section, key, "").strip():
                return self.get_int(section, key, default)
        return default

    def get_bool(self, section: str, key: str) -> bool:
        return self.parse(section, key, "", _bool)


class _Strict:
    """How load_settings meets a problem: it raises the ConfigError that stops start-up."""

    def problem(self, problem: ConfigProblem) -> None:
        raise ConfigError(problem.error_text())

    def count(self) -> int:
        """How many problems were noted so far (always 0 here: the first one raised)."""
        return 0

    def read(self, path: str, describe: Callable[[str], str],
             ) -> dict[tuple[str, str], IniValue] | None:
        return _read(path, describe)

    def read_include(self, path: str, describe: Callable[[str], str], cfg: _Lookup,
                     message: str) -> dict[tuple[str, str], IniValue]:
        return _read(path, describe)

    def lookup(self, path: str, main: dict[tuple[str, str], IniValue], include_path: str = "",
               include: dict[tuple[str, str], IniValue] | None = None) -> _Lookup:
        return _Lookup(path, main, include_path, include)

    def workers(self, cfg: _Lookup, path: str) -> int:
        return _workers(cfg.get_str("runner", "workers", ""), path)


class _KeyProblemError(ConfigError):
    """A ConfigError about one key, carrying where it is (the collecting lookup's fail())."""

    def __init__(self, problem: ConfigProblem) -> None:
        super().__init__(problem.error_text())
        self.problem = problem


class _Collect(_Strict):
    """How check_settings meets a problem: it notes it and goes on with the key's default."""

    def __init__(self) -> None:
        self.problems: list[ConfigProblem] = []
        self.lines: dict[tuple[str, str, str], int] = {}  # (file, section, key) -> line

    def problem(self, problem: ConfigProblem) -> None:
        if problem not in self.problems:  # some keys are read twice (the base variables)
            self.problems.append(problem)

    def count(self) -> int:
        return len(self.problems)

    def read(self, path: str, describe: Callable[[str], str],
             ) -> dict[tuple[str, str], IniValue] | None:
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except OSError as e:
            self.problem(ConfigProblem(path, None, None, None,
                                       f"cannot read config file: {e.strerror or e}"))
            return None
        except UnicodeDecodeError as e:
            self.problem(ConfigProblem(path, None, None, None,
                                       f"cannot read config file: not UTF-8 text ({e.reason})"))
            return None
        return self._parse(path, text)

    def read_include(self, path: str, describe: Callable[[str], str], cfg: _Lookup,
                     message: str) -> dict[tuple[str, str], IniValue]:
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except (OSError, UnicodeDecodeError) as e:
            reason = (e.strerror or str(e)) if isinstance(e, OSError) else (
                f"not UTF-8 text ({e.reason})")
            self.problem(cfg.problem("global", "include", f"{message}: {reason}"))
            return {}
        return self._parse(path, text)

    def _parse(self, path: str, text: str) -> dict[tuple[str, str], IniValue]:
        """parse_ini one line at a time, so that every bad line is noted with its number."""
        out: dict[tuple[str, str], IniValue] = {}
        header = "[General]"
        for lineno, line in enumerate(text.splitlines(), 1):
            stripped = line.strip()
            try:
                if stripped.startswith("["):
                    # the section's name, as parse_ini reads it
                    (section, _), = parse_ini(f"{line}\n_=").keys()
                    header = f"[{section or 'General'}]"
                    continue
                entries = parse_ini(f"{header}\n{line}")
            except IniSyntaxError as e:
                message = str(e).split(": ", 1)[1]  # drop parse_ini's "line 2: "
                self.problem(ConfigProblem(path, lineno, None, None, message))
                continue
            for key, value in entries.items():
                out.pop(key, None)  # a repeated key moves to its latest position
                out[key] = value
                self.lines[(path, *key)] = lineno
        return out

    def lookup(self, path: str, main: dict[tuple[str, str], IniValue], include_path: str = "",
               include: dict[tuple[str, str], IniValue] | None = None) -> _Lookup:
        return _CollectingLookup(self, path, main, include_path, include)

    def workers(self, cfg: _Lookup, path: str) -> int:
        try:
            return super().workers(cfg, path)
        except ConfigError as e:
            self.problem(cfg.problem("runner", "workers", str(e).split(": ", 2)[2]))
            return default_workers()


class _CollectingLookup(_Lookup):
    """A _Lookup that notes a bad key (with its file and line) and answers its default."""

    def __init__(self, mode: _Collect, path: str, main: dict[tuple[str, str], IniValue],
                 include_path: str = "",
                 include: dict[tuple[str, str], IniValue] | None = None) -> None:
        super().__init__(path, main, include_path, include)
        self._mode = mode

    def line(self, section: str, key: str) -> int | None:
        entry = self._entries.get((section, key))
        return self._mode.lines.get((entry[1], section, key)) if entry else None

    def fail(self, section: str, key: str, message: str) -> ConfigError:
        return _KeyProblemError(self.problem(section, key, message))

    def get_str(self, section: str, key: str, default: str) -> str:
        try:
            return super().get_str(section, key, default)
        except _KeyProblemError as e:
            self._mode.problem(e.problem)
            return default

    def parse(self, section: str, key: str, default: str, parse: Callable[[str], _T]) -> _T:
        try:
            return super().parse(section, key, default, parse)
        except _KeyProblemError as e:
            self._mode.problem(e.problem)
            return parse(default)

    def parse_items(self, section: str, key: str, parse: Callable[[Sequence[str]], _T]) -> _T:
        try:
            return super().parse_items(section, key, parse)
        except _KeyProblemError as e:
            self._mode.problem(e.problem)
            return parse(())


def _backplane(value: str) -> str:
    """
    C{backplane}: empty (off) or C{redis://[user:password@]host[:port][/db]} (C{rediss://}:
    TLS). Checked here so a typo stops start-up; the message never quotes the value (it may
    hold a password). L{pushpin_tx.backplane.redis.parse_backplane_url} reads it.
    """
    value = value.strip()
    if not value:
        return ""
    parts = urllib.parse.urlsplit(value)
    if parts.scheme not in ("redis", "rediss") or not parts.hostname:
        raise ConfigError("expected redis://[user:password@]host[:port][/db] or rediss://...")
    try:
        parts.port
    except ValueError:
        raise ConfigError("invalid port") from None
    db = parts.path.strip("/")
    if db and not db.isdigit():
        raise ConfigError("the database (the URL's path) must be a number")
    options = {name for name, _ in urllib.parse.parse_qsl(parts.query)}
    if options - {"ca"}:
        raise ConfigError("the only option is ca=FILE (rediss://...?ca=FILE)")
    if options and parts.scheme != "rediss":
        raise ConfigError("ca= is for rediss:// (TLS)")
    return value


def _base_vars(cfg: _Lookup, config_dir: str, instance_id: int | None = None) -> _Vars:
    """rundir, ipc_prefix and port_offset: the values every other value is resolved with."""
    rundir = (cfg.get_str("global", "rundir", "").strip()
              or cfg.get_str("runner", "rundir", "").strip())  # the deprecated place
    if not rundir:  # our documented choice: a private directory, so any user can run it
        rundir = os.path.join(tempfile.gettempdir(), f"pushpin-tx-{os.getuid()}")
    ipc_prefix = cfg.get_str("global", "ipc_prefix", "pushpin-")
    port_offset = cfg.parse("global", "port_offset", "0", _offset)
    if instance_id is not None:  # the runner passes --ipc-prefix, and --port-offset when > 0
        ipc_prefix = f"p{instance_id}-"
        port_offset = instance_id * 10 or port_offset
    rundir = os.path.join(config_dir, rundir.replace("{libdir}", LIBDIR))
    return _Vars(os.path.normpath(rundir), ipc_prefix, port_offset)


def _nonempty(items: Sequence[str]) -> tuple[str, ...]:
    """A list value with blank entries dropped (Pushpin's trimlist)."""
    return tuple(s.strip() for s in items if s.strip())


# ---- value parsers ------------------------------------------------------------------------


def _int(value: str) -> int:
    if not _INT.fullmatch(value.strip()):
        raise ConfigError(f"invalid integer {value!r}")
    return int(value)


def _bool(value: str) -> bool:
    # QVariant::toBool on a string: "", "0" and "false" (any case) are false. Pushpin would
    # take anything else as true ("off", "no", "false # comment"); we refuse those.
    lowered = value.strip().lower()
    if lowered in ("true", "1"):
        return True
    if lowered in ("false", "0", ""):
        return False
    raise ConfigError(f"invalid boolean {value!r} (expected true or false)")


def _port(value: str) -> int:
    text = value.strip()
    if not _DIGITS.fullmatch(text) or not 0 <= int(text) <= 65535:
        raise ConfigError(f"invalid port {value!r}")
    return int(text)


def _offset(value: str) -> int:
    offset = _int(value or "0")
    if offset < 0:
        raise ConfigError(f"invalid port offset {value!r} (must be >= 0)")
    return offset


def _control_port(value: str, offset: int) -> int:
    """push_in_http_port: absent or -1 is off; Settings::adjustedPort adds the offset."""
    if not value.strip() or value.strip() == "-1":
        return -1
    port = _int(value)
    if port == 0:
        return 0  # any free port (our extension)
    if not 1 <= port <= 65535 or port + offset > 65535:
        shown = f" (+ port_offset {offset} = {port + offset})" if offset and port > 0 else ""
        raise ConfigError(f"invalid port {value!r}{shown}")
    return port + offset


def _positive_int(value: str) -> int:
    number = _int(value)
    if number < 1:
        raise ConfigError(f"invalid value {value!r} (must be >= 1)")
    return number


def _non_negative_int(value: str) -> int:
    number = _int(value)
    if number < 0:
        raise ConfigError(f"invalid value {value!r} (must be >= 0)")
    return number


def _overflow(value: str) -> str:
    if value not in ("drop", "disconnect"):
        raise ConfigError(f"invalid value {value!r} (expected drop or disconnect)")
    return value


def _stats_format(value: str) -> str:
    # Pushpin takes anything but "json" as tnetstring; a typo is more likely than intent.
    if value not in ("", "tnetstring", "json"):
        raise ConfigError(f"invalid stats format {value!r} (expected tnetstring or json)")
    return value or "tnetstring"


def default_workers() -> int:
    """The number of cores this process may run on (the C{workers} default)."""
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except (AttributeError, OSError):
        return max(os.cpu_count() or 1, 1)


def _workers(value: str, path: str) -> int:
    """C{[runner] workers}: a count >= 1, or empty / C{auto} for one per core."""
    value = value.strip()
    if value in ("", "auto"):
        return default_workers()
    try:
        count = int(value)
    except ValueError:
        count = 0
    if count < 1:
        raise ConfigError(f"{path}: [runner] workers: expected a number >= 1 or 'auto', got {value!r}")
    return count


def _log_level(items: Sequence[str]) -> int:
    """`N` or `name:N,...` (the runner's parseLogLevel); we are both proxy and handler."""
    levels: dict[str, int] = {}
    for part in _nonempty(items):
        name, colon, number = part.rpartition(":")
        if not _DIGITS.fullmatch(number.strip()) or (colon and not name.strip()):
            raise ConfigError(f"invalid log level {','.join(items)!r} (expected N or name:N,...)")
        levels[name.strip()] = int(number)
    ours = [levels[n] for n in ("pushpin-proxy", "proxy", "pushpin-handler", "handler")
            if n in levels]
    return max(ours) if ours else levels.get("", 2)


def _forwarded_for(items: Sequence[str]) -> ForwardedForRule:
    truncate: int | None = None
    append = False
    for item in (s.strip() for s in items):
        if item.startswith("truncate:"):
            count = item[len("truncate:"):]
            if not _DIGITS.fullmatch(count):
                raise ConfigError(f"invalid truncate count in {item!r}")
            truncate = int(count)
        elif item == "append":
            append = True
        elif item:
            raise ConfigError(f"unknown rule {item!r} (expected truncate:N or append)")
    return ForwardedForRule(truncate, append)


def _signing_key(value: str, base_dir: str, need_private: bool) -> SigningKey:
    """Jwt::EncodingKey::fromConfigString, with errors that never echo a secret."""
    if value.startswith("file:"):
        key_path = os.path.join(base_dir, value[len("file:"):])
        try:
            with open(key_path, "rb") as f:
                pem = f.read()
        except OSError as e:
            raise ConfigError(f"cannot read key file {key_path!r}: {e.strerror}") from None
        return SigningKey(_pem_algorithm(pem, key_path, need_private), pem)
    if value.startswith("base64:"):
        encoded = "".join(value[len("base64:"):].split())
        try:
            secret = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
        except binascii.Error:
            raise ConfigError(f"invalid base64 in 'base64:' secret (value redacted, "
                              f"{len(encoded)} characters)") from None
        return SigningKey("HS256", secret)
    return SigningKey("HS256", to_utf8(value))


def _pem_algorithm(pem: bytes, key_path: str, need_private: bool) -> str:
    key: object
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        try:
            key = serialization.load_pem_public_key(pem)
        except (ValueError, UnsupportedAlgorithm):
            raise ConfigError(f"key file {key_path!r} holds no unencrypted PEM key") from None
        if need_private:
            raise ConfigError(f"key file {key_path!r} holds a public key; signing needs the "
                              "private key")
    if isinstance(key, (ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey)):
        if not isinstance(key.curve, ec.SECP256R1):
            raise ConfigError(f"key file {key_path!r}: EC curve {key.curve.name} is not "
                              "P-256 (ES256)")
        return "ES256"
    if isinstance(key, (rsa.RSAPrivateKey, rsa.RSAPublicKey)):
        return "RS256"
    raise ConfigError(f"key file {key_path!r}: unsupported key type {type(key).__name__} "
                      "(expected EC P-256 or RSA)")
