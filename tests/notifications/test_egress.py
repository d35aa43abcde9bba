"""The address policy for webhook targets, the allow-list setting, and what registration refuses."""

from __future__ import annotations

import ipaddress

import pytest

from services.common.settings import SettingsError
from services.gateway.settings import GatewaySettings
from services.notifications.egress import (
    EgressRefused,
    env_networks,
    parse_ip_literal,
    parse_networks,
    permitted,
    resolve_permitted,
)

LOOPBACK = parse_networks("127.0.0.0/8,::1/128")


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1", "127.255.0.9", "10.0.0.1", "172.16.0.1", "172.31.255.254", "192.168.1.1",
        "169.254.169.254", "100.64.0.1", "0.0.0.0", "224.0.0.1", "239.255.255.250", "255.255.255.255",
        "240.0.0.1", "192.0.2.1", "198.18.0.1",
        "::1", "::", "fe80::1", "fc00::1", "fd12:3456::1", "ff02::1", "ff0e::1", "fec0::1", "2001:db8::1",
        "::ffff:127.0.0.1", "::ffff:10.0.0.1", "::ffff:169.254.169.254",   # IPv4-mapped
        "64:ff9b::7f00:1", "64:ff9b::a00:1",                                # NAT64 of 127.0.0.1, 10.0.0.1
        "2002:7f00:1::1", "2002:a00:1::1",                                  # 6to4 of 127.0.0.1, 10.0.0.1
        "2001:0:4136:e378:8000:63bf:80ff:fffe",                            # Teredo
        "::127.0.0.1",                                                      # IPv4-compatible (deprecated)
    ],
)
def test_non_public_addresses_are_refused(address: str) -> None:
    assert not permitted(ipaddress.ip_address(address))


@pytest.mark.parametrize(
    "address", ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "::ffff:8.8.8.8", "64:ff9b::808:808"]
)
def test_public_addresses_are_permitted(address: str) -> None:
    assert permitted(ipaddress.ip_address(address))


def test_the_allow_list_admits_its_networks_only() -> None:
    allowed = parse_networks("10.20.0.0/16, 127.0.0.0/8")
    assert permitted(ipaddress.ip_address("10.20.3.4"), allowed)
    assert permitted(ipaddress.ip_address("::ffff:127.0.0.1"), allowed)  # judged as the IPv4 it carries
    assert not permitted(ipaddress.ip_address("10.21.0.1"), allowed)
    assert not permitted(ipaddress.ip_address("169.254.169.254"), allowed)
    assert not permitted(ipaddress.ip_address("::1"), allowed)


@pytest.mark.parametrize(
    ("host", "address"),
    [
        ("127.0.0.1", "127.0.0.1"), ("2130706433", "127.0.0.1"), ("0x7f.0.0.1", "127.0.0.1"),
        ("0177.0.0.1", "127.0.0.1"), ("127.1", "127.0.0.1"), ("0xa9fea9fe", "169.254.169.254"),
        ("[::ffff:127.0.0.1]", "::ffff:127.0.0.1"), ("::1", "::1"),
        ("example.com", None), ("hooks.example.com", None), ("deadbeef", None), ("1.example", None),
    ],
)
def test_ip_literals_are_recognised_in_every_numeric_form(host: str, address: str | None) -> None:
    expected = None if address is None else ipaddress.ip_address(address)
    assert parse_ip_literal(host) == expected


async def test_resolution_refuses_a_name_that_points_inside_unless_allowed() -> None:
    with pytest.raises(EgressRefused, match="127.0.0.1"):
        await resolve_permitted("localhost", 80)
    with pytest.raises(EgressRefused):
        await resolve_permitted("2130706433", 80)
    assert await resolve_permitted("localhost", 80, LOOPBACK) == [ipaddress.ip_address("127.0.0.1")]


def test_the_setting_parses_cidrs_and_stops_start_up_on_a_bad_one() -> None:
    base = {"CRON_SECRET": "x" * 32, "MONGODB_URI": "mongodb://127.0.0.1:27017"}
    assert GatewaySettings.from_env(base).webhook_allowed_networks == ()
    settings = GatewaySettings.from_env({**base, "WEBHOOK_ALLOWED_NETWORKS": "10.20.0.0/16, fd00:20::/32,"})
    assert settings.webhook_allowed_networks == (
        ipaddress.ip_network("10.20.0.0/16"), ipaddress.ip_network("fd00:20::/32"),
    )
    for bad in ("10.0.0.0/33", "not-a-network", "10.0.0.5/8"):
        with pytest.raises(SettingsError, match="WEBHOOK_ALLOWED_NETWORKS"):
            GatewaySettings.from_env({**base, "WEBHOOK_ALLOWED_NETWORKS": bad})
    assert env_networks("UNSET_IN_THIS_TEST", env={}) == ()
