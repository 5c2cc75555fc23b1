"""Where the worker may send requests: action targets, the judge, regeneration endpoints.

Whoever submits a decision chooses ``action.target_url`` and ``regenerate.url``, and an
AUTO decision executes with no person involved, so every URL the worker POSTs to is a
request made on the submitter's behalf from inside the operator's network. The policy
bounds where. With ``HITL_OUTBOUND_ALLOW_HOSTS`` only the hosts it lists; without it any
host except addresses no service is called at: link-local and cloud metadata (whose
answers hand out the machine's cloud credentials), unspecified, multicast, broadcast.
Loopback and private addresses stay allowed: local and internal services live there.

A host name is checked on every address it resolves to, and the request then goes to
the address that was checked (``OutboundClient``), so a name that resolves to a harmless
address for the check and to the metadata service for the connection (DNS rebinding)
never gets that second resolution. Classifying hosts and addresses is pure
(``OutboundPolicy``); the API uses it to refuse what it can tell without resolving.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx

from hitl.errors import InputError, OutboundRefused

SETTING = "HITL_OUTBOUND_ALLOW_HOSTS"

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], Awaitable[Sequence[Address]]]
"""``(host, port) -> addresses``; injectable so tests can resolve names to loopback."""

METADATA = "a cloud metadata address"
LINK_LOCAL = "a link-local address"
UNSPECIFIED = "an unspecified address"
MULTICAST = "a multicast address"
BROADCAST = "the broadcast address"
NOT_LISTED = f"not in {SETTING}"

# Denied whatever the allowlist says, unless one of its IP/CIDR entries lies inside the
# range that matched. Most specific first: the metadata addresses sit inside link-local,
# and a 169.254.0.0/16 entry must not re-allow them.
DENIED: tuple[tuple[Network, str], ...] = tuple(
    (ipaddress.ip_network(network), reason) for network, reason in (
        ("169.254.169.254/32", METADATA),  # AWS, GCP, Azure, OpenStack, DigitalOcean, ...
        ("fd00:ec2::254/128", METADATA),  # AWS over IPv6
        ("100.100.100.200/32", METADATA),  # Alibaba Cloud
        ("169.254.0.0/16", LINK_LOCAL),
        ("fe80::/10", LINK_LOCAL),
        ("0.0.0.0/8", UNSPECIFIED),  # "this network": 0.0.0.0 reaches the host itself
        ("::/128", UNSPECIFIED),
        ("224.0.0.0/4", MULTICAST),
        ("ff00::/8", MULTICAST),
        ("255.255.255.255/32", BROADCAST),
    ))

# Names the clouds give their metadata service; refused before resolving (the API
# cannot resolve), and their addresses are refused after.
METADATA_NAMES = frozenset({
    "metadata", "metadata.google.internal", "metadata.goog",
    "instance-data", "instance-data.ec2.internal",
})

# IPv6 ranges that carry an IPv4 address a gateway may forward to.
NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")

_LABEL = r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?"
_NAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
_INET_ATON = re.compile(r"[0-9a-fx.]+")  # decimal, octal, hex, fewer than four parts


def host_literal(host: str) -> Address | None:
    """The address a URL host spells, or None for a name.

    Beyond what ``ipaddress`` reads this takes every IPv4 form the C library's
    ``inet_aton`` does (``2852039166``, ``0xa9fea9fe``, ``0251.0376.0251.0376``,
    ``169.254.43518``), since that is how the resolver reads them: a check that saw a
    name there would let the request reach the address. An IPv6 zone is dropped.
    """
    host = host.strip("[]").rstrip(".").lower()
    try:
        return ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        pass
    if _INET_ATON.fullmatch(host):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


def _canonical(address: Address) -> Address:
    """An IPv4-mapped IPv6 address is that IPv4 address (a dual-stack socket connects
    there); the zone of a scoped address does not change what it is."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        return ipaddress.IPv6Address(int(address))
    return address


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address a NAT64, 6to4 or IPv4-compatible address forwards to."""
    if address.sixtofour is not None:
        return address.sixtofour
    if address in NAT64 or (address in IPV4_COMPATIBLE and int(address) > 1):
        return ipaddress.IPv4Address(int(address) & 0xFFFF_FFFF)
    return None


def denied_range(address: Address) -> tuple[Network, str] | None:
    """The denied range ``address`` falls in (or forwards to) and why, or None."""
    address = _canonical(address)
    candidates: list[Address] = [address]
    if isinstance(address, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            candidates.append(embedded)
    for candidate in candidates:
        for network, reason in DENIED:
            if candidate.version == network.version and candidate in network:
                return network, reason
    return None


@dataclass(frozen=True)
class Allowlist:
    """``HITL_OUTBOUND_ALLOW_HOSTS`` parsed: the whole set of hosts the worker may call.

    A name matches exactly (case-insensitive, trailing dot ignored); ``*.example.com``
    matches names under example.com, not example.com itself. An IP literal host must
    lie in an IP/CIDR entry; a listed name's addresses are not looked up in them.
    """

    names: frozenset[str]
    suffixes: tuple[str, ...]  # ".example.com" for "*.example.com"
    networks: tuple[Network, ...]

    @classmethod
    def parse(cls, text: str) -> Allowlist:
        names: set[str] = set()
        suffixes: list[str] = []
        networks: list[Network] = []
        for raw in text.split(","):
            entry = raw.strip().lower().rstrip(".")
            if not entry:
                continue
            try:
                networks.append(ipaddress.ip_network(entry.strip("[]")))
                continue
            except ValueError:
                literal = host_literal(entry)  # 127.1 is 127.0.0.1, as in a URL
                if literal is not None:
                    networks.append(ipaddress.ip_network(_canonical(literal)))
                    continue
            wildcard = entry.startswith("*.")
            name = entry[2:] if wildcard else entry
            if not _NAME.fullmatch(name) or "/" in entry:
                raise InputError(
                    f"{SETTING}: {raw.strip()!r} is not a host name, *.suffix, IP address or "
                    "CIDR (non-ASCII names in their xn-- form)", field="outbound_allow_hosts")
            if wildcard:
                suffixes.append(f".{name}")
            else:
                names.add(name)
        if not (names or suffixes or networks):
            raise InputError(f"{SETTING}: no hosts listed", field="outbound_allow_hosts")
        return cls(names=frozenset(names), suffixes=tuple(suffixes), networks=tuple(networks))

    def lists_name(self, name: str) -> bool:
        return name in self.names or any(name.endswith(s) for s in self.suffixes)

    def lists_address(self, address: Address) -> bool:
        return any(address in network for network in self.networks)

    def reallows(self, address: Address, denied: Network) -> bool:
        """Whether an entry re-allows a denied address: one that contains it and lies
        inside the denied range, so only an entry naming that range re-allows it (not
        0.0.0.0/0)."""
        return any(address in network and network.version == denied.version
                   and network.subnet_of(denied)  # type: ignore[arg-type]  # same version
                   for network in self.networks)


@dataclass(frozen=True)
class Destination:
    """A URL the policy accepted before resolving, and what the request needs of it."""

    url: httpx.URL
    host: str  # lowercase, without brackets or trailing dots: what the policy judged
    literal: Address | None  # the address the host spells, if it is one

    @property
    def resolve_host(self) -> str:
        """The host as the resolver must see it (a trailing dot changes a name's meaning)."""
        return self.url.raw_host.decode("ascii")

    @property
    def port(self) -> int:
        return self.url.port or (443 if self.url.scheme == "https" else 80)


@dataclass(frozen=True)
class OutboundPolicy:
    """Which hosts and addresses the worker may send to; pure, no resolving."""

    allow: Allowlist | None = None

    @classmethod
    def from_setting(cls, value: str | None) -> OutboundPolicy:
        """The policy for ``HITL_OUTBOUND_ALLOW_HOSTS``; ``InputError`` naming it if bad."""
        return cls(Allowlist.parse(value) if value and value.strip() else None)

    def check(self, url: str) -> Destination:
        """``url`` as a ``Destination`` if nothing known before resolving refuses it;
        otherwise ``OutboundRefused`` naming its host and why."""
        try:
            parsed = httpx.URL(url)
        except httpx.InvalidURL:
            raise OutboundRefused("not a valid URL", host="") from None
        host = parsed.raw_host.decode("ascii").rstrip(".").lower()
        if parsed.scheme not in ("http", "https") or not host:
            raise OutboundRefused("only http:// and https:// URLs with a host", host=host)
        literal = host_literal(host)
        if literal is not None:
            label = self.address_refusal(literal, listed_name=False)
            if label is not None:
                raise OutboundRefused(f"host {host} is {label}", host=host)
        elif self.allow is not None:
            if not self.allow.lists_name(host):
                raise OutboundRefused(f"host {host} is {NOT_LISTED}", host=host)
        elif host in METADATA_NAMES:
            raise OutboundRefused(f"host {host} is a cloud metadata host name", host=host)
        return Destination(url=parsed, host=host, literal=literal)

    def refusal(self, url: str) -> str | None:
        """Why ``url`` is refused without resolving its host, or None."""
        try:
            self.check(url)
        except OutboundRefused as exc:
            return str(exc)
        return None

    def address_refusal(self, address: Address, *, listed_name: bool) -> str | None:
        """Why the worker may not connect to ``address``, or None.

        ``listed_name``: the address is one a host name resolved to, and the name
        passed the allowlist, so only the denied ranges apply to it.
        """
        address = _canonical(address)
        denied = denied_range(address)
        if denied is not None:
            network, reason = denied
            return None if self.allow is not None and self.allow.reallows(address, network) \
                else reason
        if self.allow is not None and not listed_name and not self.allow.lists_address(address):
            return NOT_LISTED
        return None

    def resolved_refusal(self, destination: Destination,
                         addresses: Sequence[Address]) -> str | None:
        """Why a name that resolved to ``addresses`` is refused: every one must pass."""
        for address in addresses:
            label = self.address_refusal(address, listed_name=True)
            if label is not None:
                return f"host {destination.host} resolves to {label}"
        return None


DEFAULT_POLICY = OutboundPolicy()
"""No allowlist: any host but the denied ranges and the metadata names."""


async def system_resolver(host: str, port: int) -> list[Address]:
    """The addresses the operating system resolves ``host`` to, in its order."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    addresses: list[Address] = []
    for family, _, _, _, sockaddr in infos:
        if family in (socket.AF_INET, socket.AF_INET6):
            address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
            if address not in addresses:
                addresses.append(address)
    return addresses


class OutboundClient:
    """Sends a request only where the policy allows, and to the address it checked.

    The request goes to the checked IP with the URL's ``Host`` header and, for https,
    the name as SNI so the certificate is verified against the name. The connection
    pool is keyed by address, not name, so an https request closes its connection
    after the response: one verified for one name never carries another name's
    request (and its credentials). Redirects are never followed.
    """

    def __init__(self, *, client: httpx.AsyncClient, policy: OutboundPolicy,
                 resolver: Resolver = system_resolver) -> None:
        self.policy = policy
        self._client = client
        self._resolver = resolver

    async def addresses(self, destination: Destination,
                        resolve_timeout: float) -> list[Address]:
        """Where to connect: the literal, or the name's addresses once all have passed.
        A name that does not resolve is a transport error, as it was without the policy."""
        if destination.literal is not None:
            return [destination.literal]
        try:
            async with asyncio.timeout(resolve_timeout):
                addresses = list(await self._resolver(destination.resolve_host,
                                                      destination.port))
        except (OSError, TimeoutError) as exc:
            raise httpx.ConnectError(f"cannot resolve {destination.host}: {exc}") from None
        if not addresses:
            raise httpx.ConnectError(f"{destination.host} resolves to no address")
        refusal = self.policy.resolved_refusal(destination, addresses)
        if refusal is not None:
            raise OutboundRefused(refusal, host=destination.host)
        return addresses

    @asynccontextmanager
    async def stream(self, method: str, url: str, *, json: Any, headers: Mapping[str, str],
                     http_timeout: float) -> AsyncIterator[httpx.Response]:
        """The response, streamed; ``OutboundRefused`` (nothing sent) if the policy
        refuses, httpx's transport errors if no checked address answers. Resolving the
        name and each of httpx's phases get ``http_timeout`` seconds."""
        destination = self.policy.check(url)
        addresses = await self.addresses(destination, http_timeout)
        pinned = {**headers, "Host": destination.url.netloc.decode("ascii")}
        extensions: dict[str, Any] = {}
        if destination.url.scheme == "https":
            pinned["Connection"] = "close"
            extensions["sni_hostname"] = destination.resolve_host
        for index, address in enumerate(addresses):
            request = self._client.build_request(
                method, destination.url.copy_with(host=str(_canonical(address))), json=json,
                headers=pinned, timeout=http_timeout, extensions=extensions)
            try:
                response = await self._client.send(request, stream=True, follow_redirects=False)
            except httpx.ConnectError:  # nothing was sent: the next address may answer
                if index == len(addresses) - 1:
                    raise
                continue
            try:
                yield response
            finally:
                await response.aclose()
            return
