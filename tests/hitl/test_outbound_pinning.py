"""``OutboundClient`` against real servers on loopback: the request goes to the address
that was checked, under the name the URL gave (``Host``, and SNI for https)."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from hitl.errors import OutboundRefused
from hitl.outbound import Address, OutboundClient, OutboundPolicy
from tests.http_servers import LocalServer, Target

LOOPBACK = ipaddress.ip_address("127.0.0.1")


class Table:
    """A resolver answering from a table, counting what it was asked. ``.test`` names
    never resolve for real, so a request that reaches the server went to the address
    this resolver gave, not to a second resolution."""

    def __init__(self, answers: dict[str, Sequence[Address]]) -> None:
        self.answers = answers
        self.asked: list[str] = []

    async def __call__(self, host: str, port: int) -> Sequence[Address]:
        self.asked.append(host)
        return self.answers[host]


def serve(host: str = "127.0.0.1") -> tuple[LocalServer, Target]:
    target = Target()
    server = LocalServer(target, host=host)
    target.server = server
    return server, target


async def post(policy: OutboundPolicy, url: str, resolver: Table,
               verify: ssl.SSLContext | bool = True) -> int:
    async with httpx.AsyncClient(verify=verify) as client:
        outbound = OutboundClient(client=client, policy=policy, resolver=resolver)
        async with outbound.stream("POST", url, json={"a": 1}, headers={"X-Key": "k"},
                                   http_timeout=5) as response:
            return response.status_code


async def test_a_name_is_resolved_once_and_the_request_goes_to_that_address() -> None:
    resolver = Table({"target.test": [LOOPBACK]})
    with serve()[0] as server:
        port = server.server.server_address[1]
        status = await post(OutboundPolicy.from_setting("target.test"),
                            f"http://target.test:{port}/act?x=1", resolver)
    assert status == 200
    assert resolver.asked == ["target.test"]
    assert server.headers[0]["host"] == f"target.test:{port}"
    assert server.headers[0]["x-key"] == "k"
    assert server.requests == [{"a": 1}]


async def test_the_next_checked_address_is_tried_when_one_does_not_answer() -> None:
    with serve()[0] as server:
        port = server.server.server_address[1]
        # Nothing listens on 127.0.0.4: connection refused, nothing sent, next address.
        resolver = Table({"target.test": [ipaddress.ip_address("127.0.0.4"), LOOPBACK]})
        assert await post(OutboundPolicy(), f"http://target.test:{port}/", resolver) == 200
    assert len(server.requests) == 1


async def test_a_host_outside_the_allowlist_gets_no_connection() -> None:
    with serve("127.0.0.2")[0] as outside:
        with pytest.raises(OutboundRefused,
                           match="host 127.0.0.2 is not in HITL_OUTBOUND_ALLOW_HOSTS"):
            await post(OutboundPolicy.from_setting("127.0.0.1"), f"{outside.url}/act",
                       Table({}))
    assert outside.connections == 0


def _certificates(directory: Path, name: str) -> tuple[Path, Path, Path]:
    """A CA, and a certificate it signed for ``name`` only (no IP address in it)."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hitl test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(hours=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = directory / "ca.pem", directory / "cert.pem", directory / "key.pem"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return paths


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[LocalServer, ssl.SSLContext]]:
    """An https target on 127.0.0.1 whose certificate names target.test only, and a
    client context trusting its CA."""
    ca, cert, key = _certificates(tmp_path, "target.test")
    server, _ = serve()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    server.server.socket = context.wrap_socket(server.server.socket, server_side=True)
    server.server.handle_error = lambda *_: None  # type: ignore[method-assign]
    # Keep-alive, as real targets do (http.server closes after each HTTP/1.0 answer).
    server.server.RequestHandlerClass.protocol_version = "HTTP/1.1"  # type: ignore[attr-defined]
    with server:
        yield server, ssl.create_default_context(cafile=str(ca))


async def test_https_verifies_the_certificate_against_the_name(
        tls_server: tuple[LocalServer, ssl.SSLContext]) -> None:
    server, trust = tls_server
    port = server.server.server_address[1]
    resolver = Table({"target.test": [LOOPBACK], "other.test": [LOOPBACK]})
    policy = OutboundPolicy.from_setting("target.test, other.test")
    assert await post(policy, f"https://target.test:{port}/act", resolver, trust) == 200
    assert server.headers[0]["host"] == f"target.test:{port}"
    # The same address under a name the certificate does not hold: refused by TLS.
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        await post(policy, f"https://other.test:{port}/act", resolver, trust)
    assert len(server.requests) == 1


async def test_an_https_connection_verified_for_one_name_never_carries_another(
        tls_server: tuple[LocalServer, ssl.SSLContext]) -> None:
    """The pool is keyed by address: without closing, the second name's request (and
    its credentials) would ride the first name's verified connection."""
    server, trust = tls_server
    port = server.server.server_address[1]
    resolver = Table({"target.test": [LOOPBACK], "other.test": [LOOPBACK]})
    policy = OutboundPolicy.from_setting("target.test, other.test")
    async with httpx.AsyncClient(verify=trust) as client:
        outbound = OutboundClient(client=client, policy=policy, resolver=resolver)
        async with outbound.stream("POST", f"https://target.test:{port}/", json={},
                                   headers={}, http_timeout=5) as response:
            assert response.status_code == 200
            await response.aread()
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            async with outbound.stream("POST", f"https://other.test:{port}/", json={},
                                       headers={"Authorization": "Bearer s"},
                                       http_timeout=5):
                pass
    assert len(server.requests) == 1
    assert "authorization" not in server.headers[0]
