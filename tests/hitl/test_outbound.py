"""The outbound policy, as pure functions: which hosts and addresses the worker may call.

The denied addresses (metadata, link-local, ...) are tested here and only here, without
sending anything: no test ever sends traffic to them, not even to see it refused.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

import httpx
import pytest

from hitl.errors import InputError, OutboundRefused
from hitl.outbound import (
    DEFAULT_POLICY,
    Address,
    OutboundClient,
    OutboundPolicy,
    host_literal,
)
from hitl.settings import Settings

METADATA_IP = ipaddress.ip_address("169.254.169.254")

# Every spelling of the metadata address a URL can carry, as the resolver would read it.
METADATA_SPELLINGS = [
    "169.254.169.254", "169.254.169.254.", "2852039166", "0xa9fea9fe", "0XA9FEA9FE",
    "0251.0376.0251.0376.", "169.254.43518", "0xa9.0xfe.0xa9.0xfe", "0xa9.254.0251.0xfe",
    "[::ffff:169.254.169.254]", "[::ffff:a9fe:a9fe]", "[::FFFF:169.254.169.254]",
]


def refusal(url: str, policy: OutboundPolicy = DEFAULT_POLICY) -> str:
    with pytest.raises(OutboundRefused) as caught:
        policy.check(url)
    assert str(caught.value) == f"outbound request refused: {caught.value.reason}"
    return caught.value.reason


def allowlist(text: str) -> OutboundPolicy:
    return OutboundPolicy.from_setting(text)


# ------------------------------------------------------------------ addresses

@pytest.mark.parametrize("host", METADATA_SPELLINGS)
def test_every_spelling_of_the_metadata_address_is_refused(host: str) -> None:
    assert refusal(f"http://{host}/latest/meta-data/").endswith(
        "is a cloud metadata address")
    assert refusal(f"https://{host}:8443/x").endswith("is a cloud metadata address")


@pytest.mark.parametrize("spelling", [
    *(s for s in METADATA_SPELLINGS if not s.startswith("[")), "0251.0376.0251.0376"])
def test_ipv4_spellings_read_as_the_resolver_reads_them(spelling: str) -> None:
    assert host_literal(spelling) == METADATA_IP


def test_no_spelling_of_the_metadata_address_gets_through_as_a_name() -> None:
    # httpx will not send to octal dotted quads at all (as a URL host it parses them as an
    # address, strictly); with a trailing dot it takes them for a name, which the check
    # reads as the resolver would.
    assert refusal("http://0251.0376.0251.0376/") == "not a valid URL"
    assert refusal("http://0251.0376.0251.0376./") == (
        "host 0251.0376.0251.0376 is a cloud metadata address")


@pytest.mark.parametrize(("host", "reason"), [
    ("[fd00:ec2::254]", "a cloud metadata address"),
    ("100.100.100.200", "a cloud metadata address"),
    ("[::ffff:100.100.100.200]", "a cloud metadata address"),
    ("169.254.0.1", "a link-local address"),
    ("169.254.255.255", "a link-local address"),
    ("[fe80::1]", "a link-local address"),
    ("[fe80::1%25eth0]", "a link-local address"),
    ("[febf:ffff::1]", "a link-local address"),
    ("[::ffff:169.254.1.1]", "a link-local address"),
    ("0.0.0.0", "an unspecified address"),
    ("0", "an unspecified address"),
    ("0.1.2.3", "an unspecified address"),
    ("[::]", "an unspecified address"),
    ("224.0.0.1", "a multicast address"),
    ("239.255.255.250", "a multicast address"),
    ("[ff02::1]", "a multicast address"),
    ("255.255.255.255", "the broadcast address"),
    ("4294967295", "the broadcast address"),
    # IPv6 addresses a gateway forwards to an IPv4 address: NAT64, 6to4, IPv4-compatible.
    ("[64:ff9b::a9fe:a9fe]", "a cloud metadata address"),
    ("[64:ff9b::169.254.1.1]", "a link-local address"),
    ("[2002:a9fe:a9fe::1]", "a cloud metadata address"),
    ("[::169.254.169.254]", "a cloud metadata address"),
])
def test_denied_addresses_are_refused_by_default(host: str, reason: str) -> None:
    shown = host.strip("[]").lower().rstrip(".")
    assert refusal(f"http://{host}/") == f"host {shown} is {reason}"


@pytest.mark.parametrize("url", [
    "http://127.0.0.1@169.254.169.254/", "http://127.0.0.1:80@169.254.169.254/",
    "http://user:pw@[::ffff:a9fe:a9fe]:80/",
])
def test_the_host_is_read_as_httpx_sends_it_not_fooled_by_userinfo(url: str) -> None:
    # The API and the worker parse with httpx, the library that sends: no parser gap.
    assert refusal(url).endswith("is a cloud metadata address")


@pytest.mark.parametrize("host", [
    "metadata.google.internal", "METADATA.Google.Internal", "metadata.google.internal.",
    "metadata", "metadata.", "metadata.goog", "instance-data", "instance-data.ec2.internal",
])
def test_metadata_host_names_are_refused_before_resolving(host: str) -> None:
    name = host.lower().rstrip(".")
    assert refusal(f"http://{host}/computeMetadata/v1/") == (
        f"host {name} is a cloud metadata host name")


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:8080/act", "http://127.0.0.2/", "http://[::1]:9000/", "http://localhost/",
    "http://10.0.0.7/", "http://172.16.0.1/", "http://192.168.1.20/", "http://[fd00::1]/",
    "http://100.64.0.1/", "https://api.example.com/v1", "https://8.8.8.8/",
    "http://[::ffff:127.0.0.1]/", "http://127.1/", "http://metadata-service.internal/",
    "https://xn--bcher-kva.de/", "https://bücher.de/",
])
def test_loopback_private_and_public_hosts_are_allowed_by_default(url: str) -> None:
    assert DEFAULT_POLICY.refusal(url) is None


@pytest.mark.parametrize(("url", "reason"), [
    ("ftp://example.com/x", "only http:// and https:// URLs with a host"),
    ("http:///x", "only http:// and https:// URLs with a host"),
    ("http://[zz::1]/", "not a valid URL"),
    ("http://256.1.1.1/", "not a valid URL"),
])
def test_urls_the_worker_cannot_send_to_are_refused(url: str, reason: str) -> None:
    assert refusal(url) == reason


# ------------------------------------------------------------------ allowlist

def test_the_allowlist_is_the_whole_list() -> None:
    policy = allowlist("127.0.0.1")
    assert policy.refusal("http://127.0.0.1:8123/act") is None
    assert policy.refusal("http://127.1:8123/act") is None  # the same address
    assert policy.refusal("http://[::ffff:127.0.0.1]/") is None
    assert refusal("http://127.0.0.2:8123/act", policy) == (
        "host 127.0.0.2 is not in HITL_OUTBOUND_ALLOW_HOSTS")
    assert refusal("http://localhost/", policy) == (
        "host localhost is not in HITL_OUTBOUND_ALLOW_HOSTS")
    assert refusal("http://[::1]/", policy) == "host ::1 is not in HITL_OUTBOUND_ALLOW_HOSTS"


def test_names_match_exactly_and_case_insensitively() -> None:
    policy = allowlist("API.Example.com, hooks.internal.")
    for url in ("https://api.example.com/v1", "https://API.EXAMPLE.COM./v1",
                "http://hooks.internal:8080/", "http://hooks.internal./"):
        assert policy.refusal(url) is None, url
    for host in ("x.api.example.com", "example.com", "api.example.com.evil.test",
                 "apiexample.com"):
        assert refusal(f"https://{host}/", policy) == (
            f"host {host} is not in HITL_OUTBOUND_ALLOW_HOSTS")


def test_wildcards_match_names_under_the_suffix_only() -> None:
    policy = allowlist("*.svc.cluster.local")
    assert policy.refusal("http://billing.svc.cluster.local/") is None
    assert policy.refusal("http://a.billing.svc.cluster.local/") is None
    for host in ("svc.cluster.local", "evilsvc.cluster.local", "svc.cluster.local.evil.test"):
        assert refusal(f"http://{host}/", policy).endswith("not in HITL_OUTBOUND_ALLOW_HOSTS")


def test_cidrs_allow_the_addresses_they_hold() -> None:
    policy = allowlist("10.0.0.0/8, fd00::/8, [2001:db8::1]")
    for url in ("http://10.1.2.3/", "http://10.1.2.3./x",
                "http://[fd12::7]/", "http://[2001:db8::1]:81/"):
        assert policy.refusal(url) is None, url
    for host in ("11.0.0.1", "[2001:db8::2]", "127.0.0.1"):
        assert refusal(f"http://{host}/", policy).endswith("not in HITL_OUTBOUND_ALLOW_HOSTS")


def test_a_name_is_not_allowed_by_the_cidr_its_addresses_are_in() -> None:
    policy = allowlist("127.0.0.0/8")
    assert refusal("http://localhost/", policy) == (
        "host localhost is not in HITL_OUTBOUND_ALLOW_HOSTS")


def test_only_an_entry_naming_a_denied_range_reallows_it() -> None:
    everything = allowlist("0.0.0.0/0, ::/0")
    assert everything.refusal("http://8.8.8.8/") is None
    for host in ("169.254.169.254", "169.254.1.1", "[fe80::1]", "[::ffff:169.254.169.254]",
                 "0xa9fea9fe"):
        assert everything.refusal(f"http://{host}/") is not None, host

    link_local = allowlist("169.254.0.0/16")
    assert link_local.refusal("http://169.254.1.1/") is None
    # The metadata address is denied more specifically than link-local: a /16 is not it.
    assert refusal("http://169.254.169.254/", link_local) == (
        "host 169.254.169.254 is a cloud metadata address")

    metadata = allowlist("169.254.169.254")
    for host in METADATA_SPELLINGS:
        assert metadata.refusal(f"http://{host}/") is None, host
    assert metadata.refusal("http://169.254.169.253/") is not None


def test_a_listed_metadata_name_still_needs_its_address_listed() -> None:
    name_only = allowlist("metadata.google.internal")
    destination = name_only.check("http://metadata.google.internal/computeMetadata/v1/")
    assert name_only.resolved_refusal(destination, [METADATA_IP]) == (
        "host metadata.google.internal resolves to a cloud metadata address")
    both = allowlist("metadata.google.internal, 169.254.169.254")
    assert both.resolved_refusal(destination, [METADATA_IP]) is None


@pytest.mark.parametrize(("text", "bad"), [
    ("*", "'*'"), ("*.", "'*.'"), ("http://example.com", "'http://example.com'"),
    ("example.com:443", "'example.com:443'"), ("10.0.0.1/8", "'10.0.0.1/8'"),
    ("ok.example, bücher.de", "'bücher.de'"), ("a..b", "'a..b'"), ("*.*.x", "'*.*.x'"),
])
def test_a_bad_allowlist_entry_is_an_input_error_naming_the_setting(text: str, bad: str) -> None:
    with pytest.raises(InputError) as caught:
        OutboundPolicy.from_setting(text)
    assert str(caught.value).startswith(f"HITL_OUTBOUND_ALLOW_HOSTS: {bad} is not")
    assert caught.value.field == "outbound_allow_hosts"


def test_an_allowlist_of_nothing_is_refused_and_unset_is_the_default() -> None:
    with pytest.raises(InputError, match="HITL_OUTBOUND_ALLOW_HOSTS: no hosts listed"):
        OutboundPolicy.from_setting(" , ,")
    assert OutboundPolicy.from_setting(None) == DEFAULT_POLICY
    assert OutboundPolicy.from_setting("  ") == DEFAULT_POLICY


def test_the_setting_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HITL_OUTBOUND_ALLOW_HOSTS", "hooks.internal,10.0.0.0/8")
    policy = OutboundPolicy.from_setting(Settings().outbound_allow_hosts)
    assert policy.refusal("http://hooks.internal/") is None
    assert policy.refusal("http://127.0.0.1/") is not None


# --------------------------------------------------------- resolved addresses

def ips(*texts: str) -> list[Address]:
    return [ipaddress.ip_address(t) for t in texts]


@pytest.mark.parametrize(("addresses", "reason"), [
    (ips("93.184.216.34", "169.254.169.254"), "a cloud metadata address"),
    (ips("169.254.169.254"), "a cloud metadata address"),
    (ips("::ffff:169.254.169.254"), "a cloud metadata address"),
    (ips("fd00:ec2::254"), "a cloud metadata address"),
    (ips("127.0.0.1", "fe80::1"), "a link-local address"),
    (ips("0.0.0.0"), "an unspecified address"),
    (ips("::"), "an unspecified address"),
    (ips("224.0.0.251"), "a multicast address"),
])
def test_every_resolved_address_must_pass(addresses: list[Address], reason: str) -> None:
    destination = DEFAULT_POLICY.check("https://rebind.example/hook")
    assert DEFAULT_POLICY.resolved_refusal(destination, addresses) == (
        f"host rebind.example resolves to {reason}")


def test_resolved_loopback_private_and_public_addresses_pass() -> None:
    destination = DEFAULT_POLICY.check("https://svc.example/hook")
    assert DEFAULT_POLICY.resolved_refusal(
        destination, ips("127.0.0.1", "::1", "10.1.1.1", "93.184.216.34")) is None
    # A listed name's addresses are not looked up in the CIDR entries.
    policy = allowlist("svc.example")
    assert policy.resolved_refusal(policy.check("https://svc.example/"), ips("10.9.9.9")) is None


class Resolved:
    """A resolver answering from a table, recording what it was asked."""

    def __init__(self, answers: dict[str, Sequence[Address]]) -> None:
        self.answers = answers
        self.asked: list[tuple[str, int]] = []

    async def __call__(self, host: str, port: int) -> Sequence[Address]:
        self.asked.append((host, port))
        if host not in self.answers:
            raise OSError(f"no such host {host}")
        return self.answers[host]


async def addresses(url: str, resolver: Resolved,
                    policy: OutboundPolicy = DEFAULT_POLICY) -> list[Address]:
    """Where ``OutboundClient`` would connect; sends nothing."""
    async with httpx.AsyncClient() as client:
        outbound = OutboundClient(client=client, policy=policy, resolver=resolver)
        return await outbound.addresses(policy.check(url), 5.0)


async def test_names_resolving_to_denied_addresses_are_refused_before_sending() -> None:
    resolver = Resolved({"rebind.example": ips("127.0.0.1", "169.254.169.254")})
    with pytest.raises(OutboundRefused, match="host rebind.example resolves to a cloud "
                                             "metadata address"):
        await addresses("http://rebind.example:8080/x", resolver)
    assert resolver.asked == [("rebind.example", 8080)]


async def test_the_resolver_is_asked_for_the_name_as_written() -> None:
    # A trailing dot changes what a name means to the resolver (no search domains).
    resolver = Resolved({"svc.example.": ips("127.0.0.1"), "svc.example": ips("127.0.0.1")})
    assert await addresses("https://svc.example./x", resolver) == ips("127.0.0.1")
    assert await addresses("http://svc.example/x", resolver) == ips("127.0.0.1")
    assert resolver.asked == [("svc.example.", 443), ("svc.example", 80)]


async def test_literals_are_not_resolved_and_names_that_do_not_resolve_are_unavailable() -> None:
    resolver = Resolved({})
    assert await addresses("http://127.1:81/", resolver) == ips("127.0.0.1")
    assert resolver.asked == []
    with pytest.raises(httpx.ConnectError, match="cannot resolve nowhere.example"):
        await addresses("http://nowhere.example/", resolver)
    with pytest.raises(httpx.ConnectError, match="resolves to no address"):
        await addresses("http://empty.example/", Resolved({"empty.example": []}))
