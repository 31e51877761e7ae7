"""The pure parts of central's API boundary: whose X-Forwarded-For is believed, the throttle's growing delays and the
settings' rules. The middleware and the throttle against a real server: tests/integration/test_api_login_guard.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from central.api.boundary import TrustedProxies, _content_length
from central.api.throttle import ADDRESS, PAIR, USER, delay_after
from central.config import AuthSettings, load_settings, parse_settings
from sync.runtime.config import ConfigError


def test_without_trusted_proxies_the_peer_is_the_client_whatever_the_header_says() -> None:
    none = TrustedProxies(())
    assert not none
    assert none.client_of("127.0.0.1", ["203.0.113.9"]) == "127.0.0.1"


@pytest.mark.parametrize(("peer", "forwarded", "client"), [
    ("10.0.0.5", ["198.51.100.7"], "198.51.100.7"),  # one trusted proxy
    ("10.0.0.5", ["203.0.113.1, 198.51.100.7"], "198.51.100.7"),  # a client cannot pose as another (left part)
    ("10.0.0.5", ["203.0.113.1", "198.51.100.7, 10.0.0.9"], "198.51.100.7"),  # a chain of trusted proxies
    ("10.0.0.5", ["10.0.0.9"], "10.0.0.9"),  # only proxies: the left-most one
    ("10.0.0.5", ["198.51.100.7, garbage"], "10.0.0.5"),  # a garbled hop: the last one we can vouch for
    ("10.0.0.5", ["198.51.100.7:4711"], "198.51.100.7"),  # with a port
    ("10.0.0.5", ["[2001:db8::1]:4711"], "2001:db8::1"),
    ("10.0.0.5", [""], "10.0.0.5"),
    ("192.0.2.1", ["198.51.100.7"], "192.0.2.1"),  # the peer is no proxy
    ("::ffff:10.0.0.5", ["198.51.100.7"], "198.51.100.7"),  # IPv4-mapped peer
])
def test_the_right_most_address_that_is_not_a_trusted_proxy_is_the_client(peer: str, forwarded: list[str],
                                                                          client: str) -> None:
    assert TrustedProxies(("10.0.0.0/8",)).client_of(peer, forwarded) == client


def test_an_unreadable_content_length_counts_as_too_large() -> None:
    assert _content_length({"headers": [(b"content-length", b"12")]}) == 12
    assert _content_length({"headers": []}) is None
    for bad in (b"-1", b"1e9", b"12, 12", b"9" * 30):
        assert _content_length({"headers": [(b"content-length", bad)]}) > 1 << 40  # type: ignore[operator]


def test_delays_start_after_the_free_failures_and_double_up_to_the_cap() -> None:
    auth = AuthSettings(login_max_failures=5, login_delay_s=1.0, login_max_delay_s=300.0)
    assert [delay_after(auth, PAIR, n) for n in range(1, 16)] == [0, 0, 0, 0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 300,
                                                                  300]
    assert delay_after(auth, USER, 9) == 0
    assert delay_after(auth, USER, 10) == 1
    assert delay_after(auth, ADDRESS, 19) == 0
    assert delay_after(auth, ADDRESS, 20) == 1
    assert delay_after(auth, PAIR, 10**6) == 300  # no overflow


def test_trusted_proxies_must_be_addresses_or_networks() -> None:
    base = {"database_url": "sqlite:///x.db", "metrics": {"kind": "sqlite", "path": "m.sqlite"}}
    ok = parse_settings({**base, "api": {"trusted_proxies": ["10.0.0.0/8", "::1", "192.0.2.7"]}}, source="t")
    assert ok.api.trusted_proxies == ("10.0.0.0/8", "::1", "192.0.2.7")
    assert ok.api.max_body_bytes == 1 << 20
    with pytest.raises(ConfigError, match="trusted_proxies"):
        parse_settings({**base, "api": {"trusted_proxies": ["proxy.example"]}}, source="t")


def test_the_example_configuration_documents_the_limits() -> None:
    settings = load_settings(Path(__file__).parents[2] / "firmware-config/examples/central.yaml")
    assert settings.api.trusted_proxies == ()
    assert (settings.api.max_body_bytes, settings.api.max_upload_bytes) == (1 << 20, 64 << 20)
    assert settings.auth.login_window_s == 900
