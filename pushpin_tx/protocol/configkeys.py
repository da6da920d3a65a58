# -*- test-case-name: tests.protocol.test_config -*-
"""
The pushpin.conf keys Pushpin 1.36 knows, and which of them mean nothing to pushpin-tx.

Why a table: config.py reports keys a user set that Pushpin would not read (typos), and keys
that only steer Pushpin's child processes (condure, zurl and the ZeroMQ wiring between
pushpin-proxy and pushpin-handler), which pushpin-tx does not have. The key lists come
from the settings.value() calls in the 1.36 runner, proxy and handler (cross-checked against
the strings in the installed 1.36.0 binaries), plus the keys in the shipped pushpin.conf and
internal.conf, plus our own two extension keys.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

from pushpin_tx.protocol.qt.ini import IniValue

__all__ = ()

KNOWN: dict[str, frozenset[str]] = {
    "global": frozenset({
        "include", "libdir", "rundir", "ipc_prefix", "port_offset", "stats_connection_ttl",
    }),
    "runner": frozenset({
        "services", "http_port", "https_ports", "local_ports", "rundir", "logdir", "log_level",
        "client_buffer_size", "client_maxconn", "allow_compression",
        "workers",  # pushpin-tx extension: reactor processes sharing the client ports
        "http2",  # pushpin-tx extension: h2 by ALPN on https_ports (default true)
        "condure_bin", "mongrel2_bin", "m2sh_bin", "zurl_bin",
    }),
    "proxy": frozenset({
        "condure_in_specs", "condure_in_stream_specs", "condure_out_specs",
        "m2a_in_specs", "m2a_in_stream_specs", "m2a_out_specs",
        "zurl_out_specs", "zurl_out_stream_specs", "zurl_in_specs",
        "handler_inspect_spec", "handler_accept_spec", "handler_retry_in_spec",
        "handler_ws_control_in_spec", "handler_ws_control_out_spec",
        "intreq_in_specs", "intreq_in_stream_specs", "intreq_out_specs",
        "stats_spec", "command_spec", "ipc_file_mode", "max_open_requests",
        "routesfile", "debug", "auto_cross_origin", "accept_x_forwarded_protocol",
        "set_x_forwarded_protocol", "x_forwarded_for", "x_forwarded_for_trusted",
        "orig_headers_need_mark", "accept_pushpin_route", "log_from", "log_user_agent",
        "sig_iss", "sig_key", "upstream_key", "sockjs_url", "updates_check",
        "organization_name", "stats_report_interval", "prometheus_port", "prometheus_prefix",
    }),
    "handler": frozenset({
        "condure_in_stream_specs", "condure_out_specs", "m2a_in_stream_specs", "m2a_out_specs",
        "proxy_intreq_in_specs", "proxy_intreq_out_specs", "proxy_intreq_out_stream_specs",
        "proxy_inspect_spec", "proxy_accept_spec", "proxy_retry_out_spec",
        "proxy_ws_control_in_spec", "proxy_ws_control_out_spec",
        "proxy_stats_spec", "proxy_command_spec", "state_spec", "share_all", "ipc_file_mode",
        "push_in_spec", "push_in_sub_specs", "push_in_sub_spec", "push_in_sub_connect",
        "push_in_http_addr", "push_in_http_port", "update_on_first_subscription",
        "push_in_max_headers_size", "push_in_max_body_size",
        "push_in_http_max_headers_size", "push_in_http_max_body_size",  # the shipped names
        "stats_spec", "command_spec", "message_rate", "message_hwm", "message_block_size",
        "message_wait", "id_cache_ttl", "connection_subscription_max", "subscription_linger",
        "stats_subscription_ttl", "stats_report_interval", "stats_format",
        "prometheus_port", "prometheus_prefix",
        "delivery_queue_max", "delivery_overflow", "delivery_pending_max", "backplane",  # pushpin-tx extensions
        "push_in_http_auth_key", "push_in_http_auth_iss", "push_in_http_auth_basic",  # (issue 18)
        "push_in_curve_secret_key", "push_in_curve_clients",
    }),
    # pushpin-tx's own section: the operator console (twisted.conch manhole)
    "console": frozenset({"ssh_endpoint", "authorized_keys", "passwd", "telnet_endpoint", "host_key", "allow_remote"}),
}

_NOT_APPLICABLE = frozenset({
    ("global", "libdir"),  # Pushpin's own lib dir (runner templates); ours is the package data
    ("runner", "services"), ("runner", "logdir"),
    ("proxy", "updates_check"), ("proxy", "organization_name"),
    ("proxy", "stats_spec"), ("proxy", "command_spec"),
    ("proxy", "stats_report_interval"),  # the proxy process's own report timer
    ("handler", "share_all"), ("handler", "state_spec"),
})
_INTERNAL_SPEC_PREFIXES = ("condure_", "m2a_", "zurl_", "handler_", "intreq_")

_SHIPPED_SOCKJS_URL = "http://cdn.jsdelivr.net/sockjs/0.3.4/sockjs.min.js"


def is_not_applicable(section: str, key: str) -> bool:
    """Whether a known key only steers Pushpin's child processes or their wiring."""
    if (section, key) in _NOT_APPLICABLE or key == "ipc_file_mode":
        return True
    if section == "runner":
        return key.endswith("_bin")
    if section == "handler" and key.startswith("proxy_"):
        return key.endswith(("_spec", "_specs"))
    return section in ("proxy", "handler") and key.startswith(_INTERNAL_SPEC_PREFIXES)


def is_inert(section: str, key: str, value: IniValue) -> bool:
    """Whether a not-implemented key's value leaves its feature off or at Pushpin's default.

    "Default" is the code default or the value in the shipped pushpin.conf, so the stock file
    reports nothing.
    """
    items = tuple(s.strip() for s in ((value,) if isinstance(value, str) else value))
    items = tuple(s for s in items if s)
    single = items[0].lower() if len(items) == 1 else None
    match (section, key):
        case ("proxy", "sockjs_url"):
            return items in ((), (_SHIPPED_SOCKJS_URL,))
        case ("proxy", "auto_cross_origin"):
            return not items or single in ("false", "0")
        case ("runner", "client_maxconn"):
            return not items or _is_int(single, 50000)
        case ("proxy", "max_open_requests"):
            return not items or _is_int(single, -1)
        case _:
            return not items


def _is_int(text: str | None, number: int) -> bool:
    return text is not None and re.fullmatch(r"[+-]?[0-9]+", text) is not None and int(
        text) == number


def classify(keys: Iterable[tuple[str, str]], value: Callable[[str, str], IniValue | None],
             not_implemented: frozenset[tuple[str, str]],
             ) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """Sort the keys a config sets into (not_applicable, not_implemented, unknown) labels.

    Labels look like "[runner] services" and keep config order. A not-implemented key is only
    reported when its value is not inert (see L{is_inert}).
    """
    not_applicable: list[str] = []
    not_done: list[str] = []
    unknown: list[str] = []
    for section, key in keys:
        label = f"[{section or 'General'}] {key}"
        if key not in KNOWN.get(section, ()):
            unknown.append(label)
        elif is_not_applicable(section, key):
            not_applicable.append(label)
        elif (section, key) in not_implemented and not is_inert(
                section, key, value(section, key) or ""):
            not_done.append(label)
    return tuple(not_applicable), tuple(not_done), tuple(unknown)
