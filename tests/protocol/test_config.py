"""Tests for pushpin_tx.protocol.config: reading Pushpin 1.36's pushpin.conf into Settings."""

from __future__ import annotations

import dataclasses
import os
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from pushpin_tx.protocol import configkeys as _configkeys

from pushpin_tx.protocol import config
from pushpin_tx.protocol.config import (
    NOT_IMPLEMENTED_KEYS, ConfigError, ForwardedForRule, ListenAddress, LocalPort, SigningKey,
    load_settings, parse_forwarded_for, parse_listen, parse_local_port, parse_signing_key,
)

LIBDIR = config.LIBDIR
TEMP_RUNDIR = os.path.join(tempfile.gettempdir(), f"pushpin-tx-{os.getuid()}")
MINIMAL = "[runner]\nhttp_port=7999\n"


def write(tmp_path: Path, text: str, name: str = "pushpin.conf") -> str:
    """Write a config file into tmp_path and return its path."""
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def load(tmp_path: Path, text: str, **overrides: Any) -> config.Settings:
    """Load a config made of MINIMAL plus text."""
    return load_settings(write(tmp_path, MINIMAL + text), **overrides)


def pem_private(key: Any) -> bytes:
    """The unencrypted PKCS#8 PEM of a private key."""
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def pem_public(key: Any) -> bytes:
    """The SubjectPublicKeyInfo PEM of a private key's public half."""
    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    """A P-256 key (ES256)."""
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    """A 2048-bit RSA key (RS256)."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


# ---- the embedded default ------------------------------------------------------------------


@pytest.mark.parametrize("field, expected", [
    ("config_path", None),
    ("config_dir", LIBDIR),
    ("libdir", LIBDIR),
    ("rundir", TEMP_RUNDIR),
    ("ipc_prefix", "pushpin-"),
    ("port_offset", 0),
    ("stats_connection_ttl", 120),
    ("http_ports", (ListenAddress("", 7999),)),
    ("https_ports", ()),
    ("local_ports", ()),
    ("log_level", 2),
    ("client_buffer_size", 8192),
    ("client_maxconn", 50000),
    ("routesfile", os.path.join(LIBDIR, "routes")),
    ("debug", False),
    ("auto_cross_origin", False),
    ("accept_x_forwarded_protocol", False),
    ("set_x_forwarded_protocol", "proto-only"),
    ("x_forwarded_for", ForwardedForRule(None, False)),
    ("x_forwarded_for_trusted", ForwardedForRule(None, False)),
    ("orig_headers_need_mark", ()),
    ("accept_pushpin_route", False),
    ("log_from", False),
    ("log_user_agent", False),
    ("sig_iss", "pushpin"),
    ("sig_key", SigningKey("HS256", b"changeme")),
    ("upstream_key", None),
    ("sockjs_url", "http://cdn.jsdelivr.net/sockjs/0.3.4/sockjs.min.js"),
    ("push_in_spec", "tcp://127.0.0.1:5560"),
    ("push_in_sub_specs", ("tcp://127.0.0.1:5562",)),
    ("push_in_sub_connect", False),
    ("push_in_http_addr", "127.0.0.1"),
    ("push_in_http_port", 5561),
    ("push_in_max_headers_size", 10000),
    ("push_in_max_body_size", 1000000),
    ("stats_spec", f"ipc://{TEMP_RUNDIR}/pushpin-stats"),
    ("command_spec", "tcp://127.0.0.1:5563"),
    ("message_rate", 2500),
    ("message_hwm", 25000),
    ("message_block_size", None),
    ("message_wait", 5000),
    ("id_cache_ttl", 60),
    ("connection_subscription_max", 20),
    ("subscription_linger", 60),
    ("stats_subscription_ttl", 60),
    ("stats_report_interval", 10),
    ("stats_format", "tnetstring"),
    ("prometheus_port", None),
    ("prometheus_prefix", ""),
    ("delivery_queue_max", 1000),
    ("delivery_overflow", "disconnect"),
    ("routes_override", None),
    ("not_implemented", ()),
    ("unknown", ()),
])
def test_embedded_default(field: str, expected: object) -> None:
    """Without --config, the embedded default gives Pushpin's stock settings."""
    assert getattr(load_settings(None), field) == expected


def test_embedded_default_routes_file_is_packaged() -> None:
    """The embedded default's routes file is the one shipped in the package."""
    assert os.path.isfile(load_settings(None).routesfile)


def test_debian_stock_file_loads_with_our_internal_conf(tmp_path: Path) -> None:
    """Debian's stock pushpin.conf (include={libdir}/internal.conf) works unchanged."""
    stock = Path(LIBDIR, "pushpin.conf").read_text().replace("rundir=\n", "rundir=/run/pp\n")
    stock += "\n[runner]\ncondure_bin=condure\n"
    settings = load_settings(write(tmp_path, stock))
    assert settings.rundir == "/run/pp"
    assert settings.delivery_queue_max == 1000
    assert "[runner] condure_bin" in settings.not_applicable


# ---- code defaults for absent keys ---------------------------------------------------------


@pytest.mark.parametrize("field, expected", [
    ("message_rate", -1),
    ("message_hwm", -1),
    ("message_block_size", None),
    ("message_wait", 5000),
    ("id_cache_ttl", 0),
    ("connection_subscription_max", 20),
    ("subscription_linger", 60),
    ("stats_subscription_ttl", 60),
    ("stats_report_interval", 10),
    ("stats_format", "tnetstring"),
    ("prometheus_port", None),
    ("prometheus_prefix", ""),
    ("stats_connection_ttl", 120),
    ("client_buffer_size", 8192),
    ("client_maxconn", 50000),
    ("sig_iss", "pushpin"),
    ("sig_key", SigningKey("HS256", b"")),
    ("set_x_forwarded_protocol", ""),
    ("sockjs_url", ""),
    ("routesfile", ""),
    ("push_in_spec", ""),
    ("push_in_sub_specs", ()),
    ("push_in_http_addr", ""),
    ("push_in_http_port", -1),
    ("push_in_max_headers_size", 10000),
    ("push_in_max_body_size", 1000000),
    ("ipc_prefix", "pushpin-"),
    ("port_offset", 0),
    ("log_level", 2),
    ("delivery_queue_max", 1000),
    ("delivery_overflow", "disconnect"),
])
def test_code_defaults(tmp_path: Path, field: str, expected: object) -> None:
    """A key missing from the file takes Pushpin's code default, not the shipped file's."""
    assert getattr(load(tmp_path, ""), field) == expected


@pytest.mark.parametrize("text, field, expected", [
    ("[handler]\nmessage_block_size=4096\n", "message_block_size", 4096),
    ("[handler]\nmessage_block_size=0\n", "message_block_size", None),
    ("[handler]\nmessage_rate=\n", "message_rate", -1),
    ("[handler]\nstats_format=json\n", "stats_format", "json"),
    ("[handler]\npush_in_http_port=-1\n", "push_in_http_port", -1),
    ("[handler]\ndelivery_queue_max=5\ndelivery_overflow=drop\n", "delivery_overflow",
     "drop"),
    ("[handler]\npush_in_sub_specs=tcp://a:1, tcp://b:2\npush_in_sub_spec=tcp://c:3\n",
     "push_in_sub_specs", ("tcp://a:1", "tcp://b:2", "tcp://c:3")),
    ("[proxy]\nprometheus_port=9100\nprometheus_prefix=pp_\n", "prometheus_port", "9100"),
    ("[proxy]\nprometheus_port=9100\n[handler]\nprometheus_port=127.0.0.1:9101\n",
     "prometheus_port", "127.0.0.1:9101"),
    ("[proxy]\nprometheus_prefix=pp_\n", "prometheus_prefix", "pp_"),
    ("[proxy]\nset_x_forwarded_protocol=true\n", "set_x_forwarded_protocol", "true"),
    ("[proxy]\nset_x_forwarded_protocol=proto-only\n", "set_x_forwarded_protocol",
     "proto-only"),
    ("[proxy]\nset_x_forwarded_protocol=yes\n", "set_x_forwarded_protocol", ""),
    ("[proxy]\nset_x_forwarded_protocol=True\n", "set_x_forwarded_protocol", ""),
    ("[proxy]\norig_headers_need_mark=X-A, X-B\n", "orig_headers_need_mark", ("X-A", "X-B")),
    ("[proxy]\ndebug=1\n", "debug", True),
    ("[proxy]\ndebug=TRUE\n", "debug", True),
    ("[proxy]\ndebug=0\n", "debug", False),
    ("[proxy]\ndebug=\n", "debug", False),
    ("[proxy]\nsig_iss=me\n", "sig_iss", "me"),
])
def test_values(tmp_path: Path, text: str, field: str, expected: object) -> None:
    """Values in the file are read as Pushpin reads them."""
    assert getattr(load(tmp_path, text), field) == expected


@pytest.mark.parametrize("text, expected", [
    ("push_in_http_max_headers_size=123\npush_in_http_max_body_size=456\n", (123, 456)),
    ("push_in_max_headers_size=1\npush_in_http_max_headers_size=2\n"
     "push_in_max_body_size=3\npush_in_http_max_body_size=4\n", (1, 3)),
    ("push_in_max_headers_size=7\n", (7, 1000000)),
    ("push_in_http_max_body_size=8\n", (10000, 8)),
])
def test_control_api_size_limits(tmp_path: Path, text: str, expected: tuple[int, int]) -> None:
    """The shipped push_in_http_max_* names work; the push_in_max_* names 1.36 reads win."""
    settings = load(tmp_path, "[handler]\n" + text)
    assert (settings.push_in_max_headers_size, settings.push_in_max_body_size) == expected


# ---- include -------------------------------------------------------------------------------


def test_include_keys_are_fallbacks(tmp_path: Path) -> None:
    """An included file fills in keys; the file's own keys win."""
    write(tmp_path, "[handler]\nmessage_rate=1\nmessage_hwm=2\n", "extra.conf")
    settings = load(tmp_path, "[global]\ninclude=extra.conf\n[handler]\nmessage_rate=10\n")
    assert (settings.message_rate, settings.message_hwm) == (10, 2)


def test_include_internal_conf_means_libdir(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """The literal include=internal.conf reads {libdir}/internal.conf."""
    libdir = tmp_path / "lib"
    libdir.mkdir()
    write(libdir, "[handler]\ndelivery_queue_max=7\n", "internal.conf")
    monkeypatch.setattr(config, "LIBDIR", str(libdir))
    settings = load(tmp_path, "[global]\ninclude=internal.conf\n")
    assert (settings.delivery_queue_max, settings.libdir) == (7, str(libdir))


def test_include_absolute_path_and_substitution(tmp_path: Path) -> None:
    """The include path may be absolute, and {libdir} is substituted in it."""
    other = tmp_path / "other"
    other.mkdir()
    write(other, "[handler]\nmessage_wait=9\n", "x.conf")
    assert load(tmp_path, f"[global]\ninclude={other}/x.conf\n").message_wait == 9
    settings = load(tmp_path, "[global]\ninclude={libdir}/internal.conf\n")
    assert settings.delivery_overflow == "disconnect"


# ---- substitutions and paths ---------------------------------------------------------------


@pytest.mark.parametrize("text, field, expected", [
    ("[handler]\nstats_spec=ipc://{rundir}/{ipc_prefix}stats\n", "stats_spec",
     "ipc://{dir}/run/x-stats"),
    ("[handler]\ncommand_spec=ipc://{libdir}/cmd\n", "command_spec", f"ipc://{LIBDIR}/cmd"),
    ("[proxy]\nroutesfile={libdir}/routes\n", "routesfile", os.path.join(LIBDIR, "routes")),
    ("[proxy]\nroutesfile=conf/routes\n", "routesfile", "{dir}/conf/routes"),
    ("[proxy]\nroutesfile=/abs/routes\n", "routesfile", "/abs/routes"),
    ("[handler]\npush_in_sub_specs=ipc://{rundir}/a,tcp://127.0.0.1:1\n", "push_in_sub_specs",
     ("ipc://{dir}/run/a", "tcp://127.0.0.1:1")),
    ("[proxy]\nsockjs_url=http://{ipc_prefix}/s.js\n", "sockjs_url", "http://x-/s.js"),
])
def test_substitutions(tmp_path: Path, text: str, field: str, expected: object) -> None:
    """{libdir}, {rundir} and {ipc_prefix} are substituted in every value."""
    settings = load(tmp_path, "[global]\nrundir=run\nipc_prefix=x-\n" + text)
    fill = (lambda s: s.replace("{dir}", str(tmp_path)))
    wanted = tuple(map(fill, expected)) if isinstance(expected, tuple) else fill(expected)
    assert getattr(settings, field) == wanted


@pytest.mark.parametrize("text, expected", [
    ("[global]\nrundir=\n", TEMP_RUNDIR),
    ("", TEMP_RUNDIR),
    ("[global]\nrundir=/var/run/pushpin\n", "/var/run/pushpin"),
    ("[global]\nrundir=state/run\n", "{dir}/state/run"),
    ("[runner]\nrundir=/old/place\n", "/old/place"),
    ("[global]\nrundir=/new\n[runner]\nrundir=/old\n", "/new"),
])
def test_rundir(tmp_path: Path, text: str, expected: str) -> None:
    """rundir: [global], else the deprecated [runner] one, else a private temp dir."""
    settings = load_settings(write(tmp_path, text + MINIMAL))
    assert settings.rundir == expected.replace("{dir}", str(tmp_path))


# ---- port offset and command-line overrides ------------------------------------------------


OFFSET_CONF = """
[global]
port_offset=100
[runner]
http_port=7999,127.0.0.1:8000
https_ports=8443
[handler]
push_in_spec=tcp://127.0.0.1:5560
push_in_sub_specs=tcp://127.0.0.1:5562,ipc://x
push_in_http_port=5561
stats_spec=tcp://[::1]:5564
command_spec=tcp://*:5563
"""


@pytest.mark.parametrize("field, expected", [
    ("port_offset", 100),
    ("push_in_spec", "tcp://127.0.0.1:5660"),
    ("push_in_sub_specs", ("tcp://127.0.0.1:5662", "ipc://x")),
    ("push_in_http_port", 5661),
    ("stats_spec", "tcp://[::1]:5664"),
    ("command_spec", "tcp://*:5663"),
    # Pushpin 1.36 does not offset client ports (condure listened on 7999 with offset 100)
    ("http_ports", (ListenAddress("", 7999), ListenAddress("127.0.0.1", 8000))),
    ("https_ports", (ListenAddress("", 8443),)),
])
def test_port_offset(tmp_path: Path, field: str, expected: object) -> None:
    """port_offset is added to tcp:// specs and the control port, not to client ports."""
    assert getattr(load_settings(write(tmp_path, OFFSET_CONF)), field) == expected


@pytest.mark.parametrize("instance_id, prefix, offset, push_in", [
    (2, "p2-", 20, "tcp://127.0.0.1:5580"),
    (0, "p0-", 100, "tcp://127.0.0.1:5660"),
])
def test_instance_id(tmp_path: Path, instance_id: int, prefix: str, offset: int,
                     push_in: str) -> None:
    """--id N sets ipc prefix pN- and replaces port_offset with N*10 (when non-zero)."""
    settings = load_settings(write(tmp_path, OFFSET_CONF + "[global]\nrundir=/r\n"),
                             instance_id=instance_id)
    assert (settings.ipc_prefix, settings.port_offset, settings.push_in_spec) == (
        prefix, offset, push_in)
    assert settings.http_ports[0] == ListenAddress("", 7999)


def test_instance_id_prefix_reaches_substitutions(tmp_path: Path) -> None:
    """--id's ipc prefix is what {ipc_prefix} expands to."""
    settings = load(tmp_path, "[global]\nrundir=/r\n[handler]\nstats_spec=ipc://{rundir}/"
                              "{ipc_prefix}stats\n", instance_id=1)
    assert settings.stats_spec == "ipc:///r/p1-stats"


@pytest.mark.parametrize("port, expected", [
    ("9000", ListenAddress("", 9000)),
    ("127.0.0.1:9001", ListenAddress("127.0.0.1", 9001)),
    ("[::1]:9002", ListenAddress("::1", 9002)),
])
def test_port_override(tmp_path: Path, port: str, expected: ListenAddress) -> None:
    """--port replaces every client listener with one plain HTTP port, with no offset."""
    settings = load_settings(write(tmp_path, OFFSET_CONF + "[runner]\nlocal_ports=/s\n"),
                             port=port, instance_id=3)
    assert (settings.http_ports, settings.https_ports, settings.local_ports) == (
        (expected,), (), ())


@pytest.mark.parametrize("routes, expected", [
    (["* test", "example.com localhost:8080"], ("* test", "example.com localhost:8080")),
    ([], None),
    (None, None),
])
def test_route_override(tmp_path: Path, routes: list[str] | None,
                        expected: tuple[str, ...] | None) -> None:
    """--route lines replace the routes file; none given keeps the file."""
    assert load(tmp_path, "", routes=routes).routes_override == expected


@pytest.mark.parametrize("value, override, expected", [
    ("3", None, 3),
    ("0", None, 0),
    ("1", 3, 3),
    ("pushpin-proxy:4,1", None, 4),
    ("pushpin-handler:5", None, 5),
    ("proxy:1,handler:3", None, 3),
    ("runner:5,condure:4", None, 2),
    ("runner:5,1", None, 1),
    ("", None, 2),
])
def test_log_level(tmp_path: Path, value: str, override: int | None, expected: int) -> None:
    """[runner] log_level: N, or our component's name:N; --loglevel wins."""
    settings = load(tmp_path, f"[runner]\nlog_level={value}\n", log_level=override)
    assert settings.log_level == expected


# ---- errors --------------------------------------------------------------------------------


@pytest.mark.parametrize("text, where, bad", [
    ("[proxy]\ndebug=yes\n", "[proxy] debug", "'yes'"),
    ("[proxy]\nlog_from=false # no\n", "[proxy] log_from", "'false # no'"),
    ("[handler]\npush_in_sub_connect=off\n", "[handler] push_in_sub_connect", "'off'"),
    ("[handler]\nmessage_rate=fast\n", "[handler] message_rate", "'fast'"),
    ("[handler]\nid_cache_ttl=1.5\n", "[handler] id_cache_ttl", "'1.5'"),
    ("[global]\nport_offset=x\n", "[global] port_offset", "'x'"),
    ("[global]\nport_offset=-5\n", "[global] port_offset", "'-5'"),
    ("[runner]\nhttp_port=abc\n", "[runner] http_port", "invalid port 'abc'"),
    ("[runner]\nhttp_port=65536\n", "[runner] http_port", "invalid port '65536'"),
    ("[runner]\nhttp_port=70000\n", "[runner] http_port", "invalid port '70000'"),
    ("[runner]\nhttp_port=7999,localhost:80\n", "[runner] http_port", "'localhost:80'"),
    ("[runner]\nhttp_port=::1:80\n", "[runner] http_port", "'::1:80'"),
    ("[runner]\nhttps_ports=x:443\n", "[runner] https_ports", "'x:443'"),
    ("[runner]\nhttp_port=\n", "[runner] http_port", "no server ports configured"),
    ("[runner]\nlog_level=loud\n", "[runner] log_level", "'loud'"),
    ("[runner]\nlog_level=:3\n", "[runner] log_level", "':3'"),
    ("[handler]\npush_in_http_port=99999\n", "[handler] push_in_http_port", "'99999'"),
    ("[global]\nport_offset=100\n[handler]\npush_in_http_port=65500\n",
     "[handler] push_in_http_port", "'65500' (+ port_offset 100 = 65600)"),
    ("[handler]\nstats_format=jsno\n", "[handler] stats_format", "'jsno'"),
    ("[handler]\ndelivery_overflow=block\n", "[handler] delivery_overflow", "'block'"),
    ("[handler]\ndelivery_queue_max=0\n", "[handler] delivery_queue_max", "'0'"),
    ("[proxy]\nx_forwarded_for=truncate:x\n", "[proxy] x_forwarded_for", "'truncate:x'"),
    ("[proxy]\nx_forwarded_for_trusted=apend\n", "[proxy] x_forwarded_for_trusted", "'apend'"),
    ("[proxy]\nsockjs_url=http://a/b,c\n", "[proxy] sockjs_url", "'http://a/b,c'"),
    ("[proxy]\nsig_key=file:missing.pem\n", "[proxy] sig_key", "missing.pem"),
])
def test_errors_name_file_key_and_value(tmp_path: Path, text: str, where: str,
                                        bad: str) -> None:
    """A bad value stops start-up with a message naming the file, the key and the value."""
    path = write(tmp_path, MINIMAL + text)
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    assert str(caught.value).startswith(f"{path}: {where}: ")
    assert bad in str(caught.value)


def test_error_in_include_names_the_include(tmp_path: Path) -> None:
    """A bad value that comes from the include names the include file."""
    include = write(tmp_path, "[handler]\nmessage_wait=soon\n", "inc.conf")
    with pytest.raises(ConfigError, match=f"^{include}: \\[handler\\] message_wait: .*'soon'"):
        load(tmp_path, "[global]\ninclude=inc.conf\n")


@pytest.mark.parametrize("text, fragment", [
    ("[global]\ninclude=nope.conf\n", "[global] include: cannot read '{dir}/nope.conf'"),
    ("[runner\nhttp_port=1\n", "line 1: malformed section header"),
    ("[proxy]\njust some words\n", "line 2: expected key=value"),
])
def test_file_errors(tmp_path: Path, text: str, fragment: str) -> None:
    """An unreadable include or a malformed line is an error naming the file."""
    path = write(tmp_path, text + MINIMAL)
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    assert str(caught.value).startswith(f"{path}: ")
    assert fragment.replace("{dir}", str(tmp_path)) in str(caught.value)


def test_unreadable_config_file(tmp_path: Path) -> None:
    """A missing config file is an error naming it."""
    missing = str(tmp_path / "missing.conf")
    with pytest.raises(ConfigError, match=f"^{missing}: cannot read config file"):
        load_settings(missing)


@pytest.mark.parametrize("overrides, message", [
    ({"port": "abc"}, "--port: invalid port 'abc'"),
    ({"port": "70000"}, "--port: invalid port '70000'"),
    ({"port": "host:80"}, "--port: invalid listen address 'host:80'"),
    ({"instance_id": -1}, "--id: must be >= 0"),
    ({"log_level": -1}, "--loglevel: must be >= 0"),
])
def test_command_line_errors(tmp_path: Path, overrides: dict[str, Any], message: str) -> None:
    """A bad command-line override is an error naming the option."""
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, "", **overrides)
    assert str(caught.value).startswith(message)


def test_bad_base64_secret_is_named_but_not_shown(tmp_path: Path) -> None:
    """Bad base64 in sig_key names the file and key but never echoes the secret."""
    path = write(tmp_path, MINIMAL + "[proxy]\nsig_key=base64:s3cr3t!!\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    assert str(caught.value).startswith(f"{path}: [proxy] sig_key: invalid base64")
    assert "s3cr3t" not in str(caught.value)


@pytest.mark.parametrize("kind, fragment", [
    ("not-pem", "holds no unencrypted PEM key"),
    ("ec-public", "holds a public key"),
    ("ec-p384", "EC curve secp384r1 is not P-256"),
    ("encrypted", "holds no unencrypted PEM key"),
])
def test_bad_key_files(tmp_path: Path, ec_key: ec.EllipticCurvePrivateKey, kind: str,
                       fragment: str) -> None:
    """sig_key=file: must name a readable, unencrypted private EC P-256 or RSA PEM key."""
    if kind == "not-pem":
        data = b"not a key at all"
    elif kind == "ec-public":
        data = pem_public(ec_key)
    elif kind == "ec-p384":
        data = pem_private(ec.generate_private_key(ec.SECP384R1()))
    else:
        data = ec_key.private_bytes(serialization.Encoding.PEM,
                                    serialization.PrivateFormat.PKCS8,
                                    serialization.BestAvailableEncryption(b"pw"))
    (tmp_path / "key.pem").write_bytes(data)
    path = write(tmp_path, MINIMAL + "[proxy]\nsig_key=file:key.pem\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    assert str(caught.value).startswith(
        f"{path}: [proxy] sig_key: key file '{tmp_path / 'key.pem'}'")
    assert fragment in str(caught.value)


@hypothesis_settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(
    st.sampled_from(["[global]", "[runner]", "[proxy]", "[handler]"]),
    st.sampled_from(sorted(_configkeys.KNOWN["proxy"] | _configkeys.KNOWN["handler"]
                           | _configkeys.KNOWN["runner"] | _configkeys.KNOWN["global"])),
    st.text(alphabet='"\\,;=# \t{}:/@x0123456789²٣-+\u00e9tcp', max_size=20)),
    max_size=6))
def test_any_file_content_gives_settings_or_config_error(
        lines: list[tuple[str, str, str]]) -> None:
    """Whatever a config file holds, loading it ends in Settings or a ConfigError."""
    text = "".join(f"{section}\n{key}={value}\n" for section, key, value in lines)
    with tempfile.TemporaryDirectory() as tmp:
        path = write(Path(tmp), MINIMAL + text)
        try:
            load_settings(path)
        except ConfigError:
            pass


# ---- parsers -------------------------------------------------------------------------------


@pytest.mark.parametrize("value, expected", [
    ("", ForwardedForRule(None, False)),
    ("append", ForwardedForRule(None, True)),
    ("truncate:0", ForwardedForRule(0, False)),
    ("truncate:0,append", ForwardedForRule(0, True)),
    ("append, truncate:2", ForwardedForRule(2, True)),
    ("truncate:5,truncate:1", ForwardedForRule(1, False)),
])
def test_parse_forwarded_for(value: str, expected: ForwardedForRule) -> None:
    """x_forwarded_for rules: truncate:N keeps the last N values, append adds the client."""
    assert parse_forwarded_for(value) == expected


@pytest.mark.parametrize("value", ["truncate:", "truncate:-1", "append,bogus", "truncate"])
def test_parse_forwarded_for_rejects(value: str) -> None:
    """An x_forwarded_for rule Pushpin would silently ignore is an error here."""
    with pytest.raises(ConfigError):
        parse_forwarded_for(value)


@pytest.mark.parametrize("value, expected, endpoint", [
    ("7999", ListenAddress("", 7999), "tcp:7999"),
    (":7999", ListenAddress("", 7999), "tcp:7999"),
    (" 127.0.0.1:80 ", ListenAddress("127.0.0.1", 80), "tcp:80:interface=127.0.0.1"),
    ("[::1]:7999", ListenAddress("::1", 7999), r"tcp:7999:interface=\:\:1"),
    ("[::]:1", ListenAddress("::", 1), r"tcp:1:interface=\:\:"),
    ("0.0.0.0:65535", ListenAddress("0.0.0.0", 65535), "tcp:65535:interface=0.0.0.0"),
])
def test_parse_listen(value: str, expected: ListenAddress, endpoint: str) -> None:
    """Listen values become addresses with twisted endpoint strings."""
    assert parse_listen(value) == expected
    assert expected.endpoint() == endpoint


@pytest.mark.parametrize("value, message", [
    ("abc", "invalid port 'abc'"),
    ("65536", "invalid port '65536'"),
    ("65536", "invalid port '65536'"),
    ("1.2.3.4:", "invalid port ''"),
    ("example.com:80", "the host must be an IP address"),
    ("::1:80", "put an IPv6 address in brackets"),
    ("[nope]:80", "the host must be an IP address"),
])
def test_parse_listen_rejects(value: str, message: str) -> None:
    """Bad listen values are errors that show the value."""
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_listen(value)


@pytest.mark.parametrize("value, expected", [
    ("changeme", SigningKey("HS256", b"changeme")),
    ("", SigningKey("HS256", b"")),
    ("base64:aGVsbG8=", SigningKey("HS256", b"hello")),
    ("base64:aGVsbG8", SigningKey("HS256", b"hello")),
    ("base64:AAEC/w==", SigningKey("HS256", b"\x00\x01\x02\xff")),
])
def test_parse_signing_key_secrets(value: str, expected: SigningKey) -> None:
    """Plain and base64: values are HS256 shared secrets."""
    assert parse_signing_key(value, "/nowhere") == expected


@pytest.mark.parametrize("kind, algorithm", [
    ("ec", "ES256"), ("ec-public", "ES256"), ("rsa", "RS256"), ("rsa-public", "RS256"),
])
def test_parse_signing_key_pem_files(tmp_path: Path, ec_key: ec.EllipticCurvePrivateKey,
                                     rsa_key: rsa.RSAPrivateKey, kind: str,
                                     algorithm: str) -> None:
    """file: reads a PEM key, relative to the base dir, and picks ES256 or RS256 by type."""
    key = ec_key if kind.startswith("ec") else rsa_key
    pem = pem_public(key) if kind.endswith("public") else pem_private(key)
    (tmp_path / "k.pem").write_bytes(pem)
    assert parse_signing_key("file:k.pem", str(tmp_path)) == SigningKey(algorithm, pem)
    assert parse_signing_key(f"file:{tmp_path}/k.pem", "/elsewhere").key == pem


def test_settings_key_files_resolve_against_config_dir(tmp_path: Path,
                                                       ec_key: ec.EllipticCurvePrivateKey,
                                                       rsa_key: rsa.RSAPrivateKey) -> None:
    """sig_key and upstream_key file: paths are relative to the config file's directory."""
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "sig.pem").write_bytes(pem_private(rsa_key))
    (tmp_path / "keys" / "up.pem").write_bytes(pem_public(ec_key))
    settings = load(tmp_path, "[proxy]\nsig_key=file:keys/sig.pem\n"
                              "upstream_key=file:keys/up.pem\n")
    assert (settings.sig_key.algorithm, settings.upstream_key) == (
        "RS256", SigningKey("ES256", pem_public(ec_key)))


def test_signing_key_repr_hides_the_secret(tmp_path: Path) -> None:
    """Neither a SigningKey's repr nor the Settings repr shows key material."""
    key = SigningKey("HS256", b"topsecret")
    assert repr(key) == "SigningKey(HS256, <redacted>)"
    assert str(key) == repr(key)
    settings = load(tmp_path, "[proxy]\nsig_key=topsecret\nupstream_key=base64:aHVzaGh1c2g=\n")
    assert settings.upstream_key == SigningKey("HS256", b"hushhush")
    assert "topsecret" not in repr(settings)
    assert "hushhush" not in repr(settings) and "aHVzaGh1c2g" not in repr(settings)


# ---- the INI dialect -----------------------------------------------------------------------


@pytest.mark.parametrize("line, field, expected", [
    ('sig_iss="a,b"', "sig_iss", "a,b"),
    ('sig_iss=  "  spaced  "  ', "sig_iss", "  spaced  "),
    ("sig_iss=  trimmed  ", "sig_iss", "trimmed"),
    ("sig_iss=semi;colon", "sig_iss", "semi"),
    ('sig_iss="semi;colon"', "sig_iss", "semi;colon"),
    (r'sig_iss="quote\"d"', "sig_iss", 'quote"d'),
    (r"sig_iss=tab\there", "sig_iss", "tab\there"),
    ("sig_iss=@@at", "sig_iss", "@at"),
    ("sig_iss = spaced key", "sig_iss", "spaced key"),
    ("sig_iss=a=b", "sig_iss", "a=b"),
    ("orig_headers_need_mark= A ,\"B, C\",,D", "orig_headers_need_mark", ("A", "B, C", "D")),
    ("x_forwarded_for=truncate:0 , append", "x_forwarded_for", ForwardedForRule(0, True)),
])
def test_qsettings_dialect(tmp_path: Path, line: str, field: str, expected: object) -> None:
    """Values follow QSettings: quotes, commas make lists, ';' ends a line, C escapes."""
    assert getattr(load(tmp_path, f"[proxy]\n{line}\n"), field) == expected


def test_comments_blank_lines_and_repeats(tmp_path: Path) -> None:
    """'#' and ';' lines are comments, sections may repeat, and a later key wins."""
    settings = load(tmp_path, "\n# a comment with = in it\n; another=1\n[proxy]\n"
                              "   debug = true   \n[handler]\nmessage_rate=1\n[proxy]\n"
                              "sig_iss=first\nsig_iss=second\n")
    assert (settings.debug, settings.sig_iss, settings.message_rate) == (True, "second", 1)
    assert settings.unknown == ()


# ---- start-up diagnostics ------------------------------------------------------------------


def test_not_applicable_keys_are_listed(tmp_path: Path) -> None:
    """Keys that steer Pushpin's child processes are listed as not applicable, in file order."""
    settings = load(tmp_path, """
[global]
libdir=/usr/lib/pushpin
[runner]
services=condure,zurl
logdir=/var/log/pushpin
zurl_bin=zurl
[proxy]
condure_in_specs=ipc://x
zurl_out_specs=ipc://x
handler_accept_spec=ipc://x
intreq_in_specs=ipc://x
stats_spec=ipc://x
command_spec=ipc://x
ipc_file_mode=777
updates_check=off
organization_name=me
[handler]
proxy_accept_spec=ipc://x
proxy_intreq_in_specs=ipc://x
m2a_out_specs=ipc://x
share_all=true
state_spec=ipc://x
ipc_file_mode=777
stats_spec=ipc://y
""")
    assert settings.not_applicable == (
        "[global] libdir", "[runner] services", "[runner] logdir", "[runner] zurl_bin",
        "[proxy] condure_in_specs", "[proxy] zurl_out_specs", "[proxy] handler_accept_spec",
        "[proxy] intreq_in_specs", "[proxy] stats_spec", "[proxy] command_spec",
        "[proxy] ipc_file_mode", "[proxy] updates_check", "[proxy] organization_name",
        "[handler] proxy_accept_spec", "[handler] proxy_intreq_in_specs",
        "[handler] m2a_out_specs", "[handler] share_all", "[handler] state_spec",
        "[handler] ipc_file_mode")
    assert settings.unknown == ()
    assert settings.stats_spec == "ipc://y"


def test_not_implemented_keys_constant() -> None:
    """The not-implemented list starts as the agreed set, editable in one place."""
    assert NOT_IMPLEMENTED_KEYS == {("proxy", "sockjs_url"), ("proxy", "max_open_requests")}


@pytest.mark.parametrize("text, expected", [
    ("[runner]\nhttps_ports=443\n", ()),
    ("[runner]\nlocal_ports=/tmp/s\n", ()),
    ("[runner]\nclient_maxconn=100\n", ()),
    ("[runner]\nallow_compression=true\n", ()),
    ("[proxy]\nsockjs_url=http://x/sockjs.js\n", ("[proxy] sockjs_url",)),
    ("[proxy]\nsockjs_url=http://cdn.jsdelivr.net/sockjs/0.3.4/sockjs.min.js\n", ()),
    ("[proxy]\norig_headers_need_mark=X-A\n", ()),  # implemented (helper-H2)
    ("[proxy]\nauto_cross_origin=true\n", ()),  # implemented (helper-H2)
    ("[proxy]\nmax_open_requests=10\n", ("[proxy] max_open_requests",)),
    ("[proxy]\nmax_open_requests=-1\n", ()),
    # Pushpin 1.41's key is implemented (pushpin_tx.core.first_subscription): never named
    ("[handler]\nupdate_on_first_subscription=true\n", ()),
    ("[handler]\nupdate_on_first_subscription=false\n", ()),
    ("", ()),
])
def test_not_implemented_reported_only_when_set(tmp_path: Path, text: str,
                                                expected: tuple[str, ...]) -> None:
    """A not-implemented key is reported only when it is set to a non-default value."""
    assert load(tmp_path, text).not_implemented == expected


@pytest.mark.parametrize("text, expected", [
    ("", True),  # Pushpin 1.41's default (1.36 always does it)
    ("[handler]\nupdate_on_first_subscription=true\n", True),
    ("[handler]\nupdate_on_first_subscription=1\n", True),
    ("[handler]\nupdate_on_first_subscription=false\n", False),
    ("[handler]\nupdate_on_first_subscription=FALSE\n", False),
    ("[handler]\nupdate_on_first_subscription=0\n", False),
    # set but empty: QSettings gives Pushpin the empty string, which QVariant::toBool reads as false
    ("[handler]\nupdate_on_first_subscription=\n", False),
])
def test_update_on_first_subscription(tmp_path: Path, text: str, expected: bool) -> None:
    """update_on_first_subscription reads as Pushpin 1.41 reads it: true unless set to a false value."""
    assert load(tmp_path, text).update_on_first_subscription is expected


def test_update_on_first_subscription_refuses_a_non_boolean(tmp_path: Path) -> None:
    """A value that is neither true nor false stops start-up naming the key (Pushpin would take it as true)."""
    with pytest.raises(ConfigError, match=r"\[handler\] update_on_first_subscription: invalid boolean 'yes'"):
        load(tmp_path, "[handler]\nupdate_on_first_subscription=yes\n")


def test_not_implemented_follows_the_constant(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Removing a key from NOT_IMPLEMENTED_KEYS stops it being reported."""
    monkeypatch.setattr(config, "NOT_IMPLEMENTED_KEYS",
                        NOT_IMPLEMENTED_KEYS - {("proxy", "sockjs_url")})
    assert load(tmp_path, "[proxy]\nsockjs_url=http://x/s.js\n").not_implemented == ()


def test_not_implemented_counts_the_include(tmp_path: Path) -> None:
    """A non-default not-implemented key set only in the include is reported too."""
    write(tmp_path, "[proxy]\nmax_open_requests=10\n", "inc.conf")
    settings = load(tmp_path, "[global]\ninclude=inc.conf\n")
    assert settings.not_implemented == ("[proxy] max_open_requests",)


def test_unknown_keys_are_listed(tmp_path: Path) -> None:
    """Keys Pushpin does not know, typos included, are listed for a warning."""
    settings = load_settings(write(tmp_path, """
stray=1
[runner]
http_port=7999
http_prot=8000
[proxy]
debgu=true
[handler]
delivery_queue_max=5
message_rate=1
[Handler]
message_rate=2
[websocket]
ws_cache_methods=a
"""))
    assert settings.unknown == ("[General] stray", "[runner] http_prot", "[proxy] debgu",
                                "[Handler] message_rate", "[websocket] ws_cache_methods")
    assert settings.message_rate == 1


def test_settings_is_frozen() -> None:
    """Settings cannot be changed after loading."""
    settings = load_settings(None)
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.debug = True  # type: ignore[misc]


def test_port_zero_means_any_free_port():
    """Port 0 is accepted for client and control listeners (bound to a free port, then logged)."""
    from pushpin_tx.protocol.config import parse_listen

    assert parse_listen("127.0.0.1:0").port == 0


@pytest.mark.parametrize(
    "line, override, expected",
    [
        ("", None, config.default_workers()),
        ("workers=auto\n", None, config.default_workers()),
        ("workers=3\n", None, 3),
        ("workers=3\n", 1, 1),  # --workers wins over the file
    ],
)
def test_workers_setting(tmp_path: Path, line: str, override: int | None, expected: int) -> None:
    """[runner] workers: a count, or empty/auto for one per core; --workers overrides it."""
    text = MINIMAL.replace("[runner]\n", "[runner]\n" + line)
    settings = load_settings(write(tmp_path, text), workers=override)
    assert settings.workers == expected


@pytest.mark.parametrize("value", ["0", "-2", "many"])
def test_workers_setting_refuses_what_is_not_a_count(tmp_path: Path, value: str) -> None:
    """A bad workers value stops start-up naming the file, section and value."""
    text = MINIMAL.replace("[runner]\n", f"[runner]\nworkers={value}\n")
    with pytest.raises(ConfigError, match=r"\[runner\] workers: expected a number >= 1"):
        load_settings(write(tmp_path, text))


@pytest.mark.parametrize("value", ["127.0.0.1", "::1", "fe80::1%eth0", "a\\b:c", ""])
def test_endpoint_quoting_matches_twisted(value: str) -> None:
    """The config layer's endpoint quoting is Twisted's quoteStringArgument, character for character."""
    from twisted.internet.endpoints import quoteStringArgument

    from pushpin_tx.protocol.config import quote_endpoint_argument

    assert quote_endpoint_argument(value) == quoteStringArgument(value)


# ---- check_settings: every problem, not just the first -----------------------------------

# configs load_settings refuses (MINIMAL is prepended); check_settings must refuse them too
CHECKED_BROKEN = [
    "[proxy]\ndebug=yes\n",
    "[proxy]\nsig_iss=a,b\n",
    "[proxy]\nx_forwarded_for=append,bogus\n",
    "[handler]\nmessage_rate=x\n",
    "[handler]\npush_in_http_port=0x10\n",
    "[handler]\nstats_format=yaml\n",
    "[global]\nport_offset=1\n[handler]\npush_in_http_port=65535\n",
    "[global]\ninclude=nowhere.conf\n",
    "[runner]\nworkers=0\n",
    "[runner]\nlog_level=x:y\n",
    "not a key line\n",
    "[proxy]\nupstream_key=file:absent.pem\n",
]


@pytest.mark.parametrize("text", CHECKED_BROKEN)
def test_check_settings_agrees_with_load_settings(tmp_path: Path, text: str) -> None:
    """check_settings notes a problem exactly where load_settings stops, with the same text."""
    path = write(tmp_path, MINIMAL + text)
    with pytest.raises(ConfigError) as refused:
        load_settings(path)
    found = config.check_settings(path)
    assert found.problems
    first = found.problems[0]
    if first.key is None and first.line:  # a syntax error: load_settings says "line N: ..."
        assert str(refused.value) == f"{path}: line {first.line}: {first.message}"
    else:
        assert first.error_text() == str(refused.value)
    assert found.settings is not None


def test_check_settings_finds_nothing_in_good_configs(tmp_path: Path) -> None:
    """The embedded default, the shipped etc/pushpin.conf and a minimal file have no problem."""
    shipped = os.path.join(os.path.dirname(__file__), "..", "..", "etc", "pushpin.conf")
    for path in (None, shipped, write(tmp_path, MINIMAL)):
        found = config.check_settings(path)
        assert found.problems == ()
        assert found.settings == load_settings(path)


def test_check_settings_collects_every_bad_key_with_its_line(tmp_path: Path) -> None:
    """Several bad keys and lines are all noted, each with file, line, section and key."""
    path = write(tmp_path, (
        "[runner]\n"                 # 1
        "http_port=7999\n"           # 2
        "log_level=x\n"              # 3
        "[proxy]\n"                  # 4
        "junk\n"                     # 5
        "debug=sometimes\n"          # 6
        "[handler]\n"                # 7
        "message_hwm=a,b\n"          # 8
        "delivery_queue_max=-5\n"    # 9
    ))
    found = config.check_settings(path)
    assert [(p.file, p.line, p.section, p.key) for p in found.problems] == [
        (path, 5, None, None),
        (path, 3, "runner", "log_level"),
        (path, 6, "proxy", "debug"),
        (path, 8, "handler", "message_hwm"),
        (path, 9, "handler", "delivery_queue_max"),
    ]
    assert str(found.problems[2]) == (
        f"{path}:6: [proxy] debug: invalid boolean 'sometimes' (expected true or false)")
    # the bad keys read as absent: the settings still hold their defaults
    assert found.settings is not None and found.settings.debug is False
    assert found.locations["[handler] delivery_queue_max"] == (path, 9)


def test_check_settings_on_an_unreadable_file(tmp_path: Path) -> None:
    """A file that cannot be read gives one problem and no settings."""
    missing = str(tmp_path / "absent.conf")
    found = config.check_settings(missing)
    assert found.settings is None
    assert [str(p) for p in found.problems] == [
        f"{missing}: cannot read config file: No such file or directory"]


def test_check_settings_repeated_key_is_located_at_its_last_line(tmp_path: Path) -> None:
    """A key set twice is read from its last line (QSettings), and located there."""
    path = write(tmp_path, MINIMAL + "[proxy]\ndebug=true\ndebug=nope\n")
    [problem] = config.check_settings(path).problems
    assert problem.line == 5


@pytest.mark.parametrize("text, expected", [
    ("/run/pushpin/server", LocalPort("/run/pushpin/server")),
    ("unix:/run/p%20s", LocalPort("/run/p s")),
    ("unix:/run/s?mode=660&user=www-data&group=adm", LocalPort("/run/s", 0o660, "www-data", "adm")),
    ("/run/s?mode=0600", LocalPort("/run/s", 0o600)),
    ("run/relative?group=adm", LocalPort("run/relative", None, None, "adm")),
])
def test_local_port_forms(text: str, expected: LocalPort) -> None:
    """local_ports takes a path or 1.37's unix:/path?mode=&user=&group= (mode in octal)."""
    assert parse_local_port(text) == expected


@pytest.mark.parametrize("text", ["unix:/s?mode=rw", "unix:/s?mode=689", "unix:?mode=600", "?mode=600"])
def test_local_port_errors(text: str) -> None:
    """A mode that is not octal, or no path, stops start-up naming the entry."""
    with pytest.raises(ConfigError):
        parse_local_port(text)


def test_local_ports_substituted_and_parsed(tmp_path: Path) -> None:
    """{rundir} and {ipc_prefix} are substituted in local_ports before the entry is read."""
    settings = load(tmp_path, "[global]\nrundir=run\nipc_prefix=x-\n"
                              "[runner]\nlocal_ports={rundir}/{ipc_prefix}server?mode=600\n")
    assert settings.local_ports == (LocalPort(str(tmp_path / "run" / "x-server"), 0o600),)


def test_certs_dir_is_next_to_the_config(tmp_path: Path) -> None:
    """The https ports' certificates are looked for in <config dir>/runner/certs, as Pushpin does."""
    assert load(tmp_path, "").certs_dir == str(tmp_path / "runner" / "certs")


@pytest.mark.parametrize("text, expected", [
    ("", (50000, False)),
    ("[runner]\nclient_maxconn=\n", (50000, False)),
    ("[runner]\nclient_maxconn=7\nallow_compression=true\n", (7, True)),
])
def test_maxconn_and_compression(tmp_path: Path, text: str, expected: tuple[int, bool]) -> None:
    """client_maxconn defaults to 50000 (blank too); allow_compression to false."""
    settings = load(tmp_path, text)
    assert (settings.client_maxconn, settings.allow_compression) == expected


@pytest.mark.parametrize("text, expected", [
    ("", True),
    ("[runner]\nhttp2=\n", True),
    ("[runner]\nhttp2=false\n", False),
    ("[runner]\nhttp2=true\n", True),
])
def test_http2_defaults_on(tmp_path: Path, text: str, expected: bool) -> None:
    """[runner] http2 (h2 by ALPN on https_ports) defaults to true, blank too; false turns it off."""
    assert load(tmp_path, text).http2 is expected


def test_http2_must_be_a_boolean(tmp_path: Path) -> None:
    """http2=off is refused at start-up, as every boolean key other than true/false/1/0."""
    with pytest.raises(ConfigError, match="http2"):
        load(tmp_path, "[runner]\nhttp2=off\n")


def test_maxconn_must_be_positive(tmp_path: Path) -> None:
    """client_maxconn=0 would never accept a client: it stops start-up instead."""
    with pytest.raises(ConfigError, match="client_maxconn"):
        load(tmp_path, "[runner]\nclient_maxconn=0\n")


def test_backplane_is_off_by_default_and_read_as_given(tmp_path: Path) -> None:
    """[handler] backplane: empty (off) unless set; a redis:// or rediss:// URL is kept as written."""
    assert load(tmp_path, "").backplane == ""
    url = "rediss://user:p%40ss@redis.example:6380/2"
    assert load(tmp_path, f"[handler]\nbackplane= {url} \n").backplane == url


@pytest.mark.parametrize("value, reason", [
    ("http://:s3cret@host/0", "expected redis://"),
    ("redis://:s3cret@host:99999/0", "invalid port"),
    ("redis://:s3cret@host/zero", "must be a number"),
    ("redis://", "expected redis://"),
    ("redis://:s3cret@host/0?ca=/ca.pem", "ca= is for rediss://"),
    ("rediss://:s3cret@host/0?verify=no", "the only option is ca=FILE"),
])
def test_a_bad_backplane_stops_start_up_without_quoting_it(tmp_path: Path, value: str, reason: str) -> None:
    """A bad backplane URL names the key and the problem, never the value (it may hold a password)."""
    path = write(tmp_path, MINIMAL + f"[handler]\nbackplane={value}\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    assert "[handler] backplane" in str(caught.value) and reason in str(caught.value)
    assert "s3cret" not in str(caught.value)
