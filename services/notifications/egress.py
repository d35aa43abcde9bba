"""Where webhook deliveries may go: public addresses, plus networks the operator allows.

Users choose their webhook URLs, so without a check the gateway could be made to
POST into its own network (server-side request forgery): its loopback, the cloud
metadata service on 169.254.169.254, databases on private ranges. The policy here
refuses every address that is not globally routable, unless it falls in the
operator's allow-list (``WEBHOOK_ALLOWED_NETWORKS``, empty by default).

The dispatcher resolves a webhook's host itself, vets every address with
``resolve_permitted`` and then connects to the vetted address, so a DNS answer
that changes between the check and the connection (DNS rebinding) gains nothing.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from collections.abc import Iterable, Mapping, Sequence

from services.common.settings import SettingsError, env_optional

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

ALLOWED_SCHEMES = frozenset({"http", "https"})
DEFAULT_PORTS: Mapping[str, int] = {"http": 80, "https": 443}

# NAT64's well-known prefix carries an IPv4 address in its last 32 bits (RFC 6052).
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
# The old numeric IPv4 forms inet_aton (and so getaddrinfo) still accept:
# 2130706433, 0x7f.0.0.1, 0177.0.0.1, 127.1. ``ipaddress`` refuses them all.
_LEGACY_IPV4 = re.compile(r"(?:0x[0-9a-f]*|[0-9]+)(?:\.(?:0x[0-9a-f]*|[0-9]+)){0,3}", re.IGNORECASE)


class EgressRefused(Exception):
    """A webhook target the gateway must not send to; the message is safe to log (no path, no query)."""


def parse_networks(text: str) -> tuple[IPNetwork, ...]:
    """Comma-separated CIDR networks; a bare address is its own /32 or /128. ValueError names a bad entry.

    Host bits must be zero (``10.0.0.5/8`` is refused): such an entry is
    more likely a typo than a wish to open the whole /8.
    """
    networks: list[IPNetwork] = []
    for item in text.split(","):
        entry = item.strip()
        if not entry:
            continue
        try:
            networks.append(ipaddress.ip_network(entry, strict=True))
        except ValueError as error:
            raise ValueError(f"{entry!r} is not a CIDR network ({error})") from None
    return tuple(networks)


def env_networks(name: str, *, env: Mapping[str, str] | None = None) -> tuple[IPNetwork, ...]:
    """A setting holding ``parse_networks`` text; unset or empty means no network."""
    raw = env_optional(name, env=env)
    if raw is None:
        return ()
    try:
        return parse_networks(raw)
    except ValueError as error:
        raise SettingsError(
            f"environment variable {name} must be comma-separated CIDR networks, e.g. 10.0.0.0/8,fd00::/8: {error}"
        ) from None


def parse_ip_literal(host: str) -> IPAddress | None:
    """The address ``host`` names without any DNS lookup, legacy numeric IPv4 forms included; else None."""
    text = host.strip().removeprefix("[").removesuffix("]")
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        pass
    if _LEGACY_IPV4.fullmatch(text):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(text))
        except OSError:
            return None
    return None


def _judged_as(address: IPAddress) -> list[IPAddress]:
    """The addresses whose standing decides for ``address``.

    An IPv4 address carried inside IPv6 reaches that IPv4 host, so it is
    judged as IPv4: ::ffff:127.0.0.1 is loopback, 64:ff9b::808:808 is 8.8.8.8.
    Tunnel forms (6to4, Teredo) must pass as themselves and as what they carry.
    """
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return [address.ipv4_mapped]
        if address in _NAT64:
            return [ipaddress.IPv4Address(int(address) & 0xFFFF_FFFF)]
        if address.sixtofour is not None:
            return [address, address.sixtofour]
        if address.teredo is not None:
            return [address, address.teredo[1]]
    return [address]


def is_public(address: IPAddress) -> bool:
    """Globally routable unicast. ``is_global`` alone lets multicast and IPv6 site-local through."""
    if not address.is_global:
        return False
    if (address.is_multicast or address.is_reserved or address.is_unspecified or address.is_loopback
            or address.is_link_local or address.is_private):
        return False
    return not (isinstance(address, ipaddress.IPv6Address) and address.is_site_local)


def permitted(address: IPAddress, allowed: Sequence[IPNetwork] = ()) -> bool:
    """Whether a webhook may be delivered to ``address``: in the allow-list, or public."""
    judged = _judged_as(address)
    if any(candidate in network for candidate in (address, *judged) for network in allowed):
        return True
    return all(is_public(candidate) for candidate in judged)


def _unique(addresses: Iterable[IPAddress]) -> list[IPAddress]:
    return list(dict.fromkeys(addresses))


async def resolve_permitted(host: str, port: int, allowed: Sequence[IPNetwork] = ()) -> list[IPAddress]:
    """Every address ``host`` resolves to, in resolver order, when all of them are permitted.

    One refused address refuses the host: a name that resolves to a public and
    a private address must not be reachable through whichever comes first.
    Resolution errors (``socket.gaierror``) propagate; the caller bounds the time.
    """
    literal = parse_ip_literal(host)
    if literal is not None:
        addresses = [literal]
    else:
        infos = await asyncio.get_running_loop().getaddrinfo(
            host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
        )
        addresses = _unique(ipaddress.ip_address(str(info[4][0])) for info in infos)
    if not addresses:
        raise socket.gaierror(socket.EAI_NONAME, f"{host} has no address")
    for address in addresses:
        if not permitted(address, allowed):
            raise EgressRefused(f"{host} resolves to {address}, which is not a public address")
    return addresses
