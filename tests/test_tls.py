"""TLS, mTLS and API keys, through a TLS-terminating proxy in front of a dev server.

The dev server speaks plain gRPC only, so a small asyncio proxy on loopback terminates TLS
(ALPN ``h2``, as gRPC needs) and forwards the bytes to it. The certificates are made here:
a CA, a server certificate for ``localhost`` and ``127.0.0.1``, and a client certificate for
mTLS. Our client and our worker connect through the proxy with ``configure(tls_...)`` and
with the ``NOMAD_TEMPORAL_TLS_*`` variables; a wrong CA or a missing client certificate fails
at once with a ``TemporalConnectionError`` that names the address.

The proxy sees the decrypted HTTP/2 stream, so the API-key test reads the request headers
(HPACK) and checks that the key travels as ``authorization: Bearer <key>``.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import ssl
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from temporalio.client import WorkflowExecutionStatus

from nomad_actions import (
    TemporalConnectionError,
    configure,
    get_action_result,
    get_action_status,
    get_config,
    start_action,
)
from nomad_actions.config import reset_config
from nomad_actions.testing import DevServer
from nomad_actions.worker import Worker
from nomad_actions_testplugin.models import GreetOutput

from .conftest import GREET, TEST_QUEUE

RESULT_TIMEOUT = 60.0
# Generous: a TLS handshake on a loaded 2-core machine can take a while.
CONNECT_TIMEOUT = 30.0


# -- certificates -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _builder(
    subject: str, issuer: str, public_key: ec.EllipticCurvePublicKey
) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.timezone.utc)
    return (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer))
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )


def _key_usage(*, ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def _make_ca(name: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        _builder(name, name, key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_key_usage(ca=True), critical=True)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _make_leaf(
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    name: str,
    usage: x509.ObjectIdentifier,
    sans: list[x509.GeneralName] | None = None,
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    issuer = ca_cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    builder = (
        _builder(name, str(issuer), key.public_key())
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(ca=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return key, builder.sign(ca_key, hashes.SHA256())


def _write_cert(path: Path, cert: x509.Certificate) -> Path:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> Path:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d = tmp_path_factory.mktemp("pki")
    ca_key, ca_cert = _make_ca("nomad-actions test CA")
    _, other_ca_cert = _make_ca("some other CA")
    server_key, server_cert = _make_leaf(
        ca_key,
        ca_cert,
        "localhost",
        ExtendedKeyUsageOID.SERVER_AUTH,
        [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))],
    )
    client_key, client_cert = _make_leaf(
        ca_key, ca_cert, "nomad-worker", ExtendedKeyUsageOID.CLIENT_AUTH
    )
    return Pki(
        ca=_write_cert(d / "ca.pem", ca_cert),
        server_cert=_write_cert(d / "server.pem", server_cert),
        server_key=_write_key(d / "server.key", server_key),
        client_cert=_write_cert(d / "client.pem", client_cert),
        client_key=_write_key(d / "client.key", client_key),
        other_ca=_write_cert(d / "other-ca.pem", other_ca_cert),
    )


# -- the TLS-terminating proxy ----------------------------------------------------------------


class TlsProxy:
    """Accepts TLS on 127.0.0.1 and forwards the plaintext to `upstream`.

    Runs its own event loop in a thread. Records, per accepted connection, the decrypted
    bytes the client sent, and counts failed handshakes.
    """

    def __init__(self, upstream: tuple[str, int], context: ssl.SSLContext) -> None:
        self.upstream = upstream
        self.context = context
        self.port = 0
        self.received: list[bytearray] = []
        self.lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._errors: list[BaseException] = []

    @property
    def connections(self) -> int:
        with self.lock:
            return len(self.received)

    def client_bytes(self) -> list[bytes]:
        with self.lock:
            return [bytes(b) for b in self.received]

    def __enter__(self) -> TlsProxy:
        ready = threading.Event()

        async def main() -> None:
            loop = asyncio.get_running_loop()
            # Failed handshakes are what some tests want: keep them out of the log.
            loop.set_exception_handler(lambda _loop, _context: None)
            self._loop = loop
            self._stop = asyncio.Event()
            handlers: set[asyncio.Task[None]] = set()

            async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
                task = asyncio.current_task()
                assert task is not None
                handlers.add(task)
                try:
                    await self._forward(reader, writer)
                finally:
                    handlers.discard(task)

            server = await asyncio.start_server(
                handle, "127.0.0.1", 0, ssl=self.context, ssl_handshake_timeout=30
            )
            self.port = server.sockets[0].getsockname()[1]
            ready.set()
            async with server:
                await self._stop.wait()
                server.close()
                for task in list(handlers):
                    task.cancel()
                await asyncio.gather(*handlers, return_exceptions=True)

        def run() -> None:
            try:
                asyncio.run(main())
            except BaseException as err:
                self._errors.append(err)
                ready.set()

        self._thread = threading.Thread(target=run, name="tls-proxy", daemon=True)
        self._thread.start()
        assert ready.wait(30), "the TLS proxy did not start"
        if self._errors:
            raise self._errors[0]
        return self

    async def _forward(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        record = bytearray()
        with self.lock:
            self.received.append(record)
        up_writer: asyncio.StreamWriter | None = None
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
            pipes = [
                asyncio.create_task(self._pipe(reader, up_writer, record)),
                asyncio.create_task(self._pipe(up_reader, writer, None)),
            ]
            try:
                await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for pipe in pipes:
                    pipe.cancel()
                await asyncio.gather(*pipes, return_exceptions=True)
        except OSError:
            pass
        finally:
            for w in (writer, up_writer):
                if w is not None:
                    w.close()
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(w.wait_closed(), 5)

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, record: bytearray | None
    ) -> None:
        with contextlib.suppress(OSError, ssl.SSLError):
            while data := await reader.read(65536):
                if record is not None:
                    with self.lock:
                        record.extend(data)
                writer.write(data)
                await writer.drain()

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._stop is not None:
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(30)


def server_context(pki: Pki, *, require_client_cert: bool) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki.server_cert, pki.server_key)
    context.set_alpn_protocols(["h2"])  # gRPC runs over HTTP/2 only
    if require_client_cert:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(pki.ca)
    return context


@pytest.fixture(scope="module")
def server() -> Iterator[DevServer]:
    with DevServer() as dev:
        yield dev


@pytest.fixture(scope="module")
def tls_proxy(server: DevServer, pki: Pki) -> Iterator[TlsProxy]:
    with TlsProxy((server.host, server.port), server_context(pki, require_client_cert=False)) as p:
        yield p


@pytest.fixture(scope="module")
def mtls_proxy(server: DevServer, pki: Pki) -> Iterator[TlsProxy]:
    with TlsProxy((server.host, server.port), server_context(pki, require_client_cert=True)) as p:
        yield p


@pytest.fixture(autouse=True)
def _clean_config() -> Iterator[None]:
    reset_config()
    yield
    reset_config()


def new_user() -> str:
    return f"user-{uuid.uuid4().hex[:8]}"


def run_greeting_round_trip(name: str) -> None:
    """start_action / get_action_status / get_action_result, with our worker on the same
    connection settings (so it too goes through the proxy)."""
    with Worker(TEST_QUEUE, actions=[GREET], config=get_config()):
        wid = start_action(GREET, {"user_id": new_user(), "name": name})
        assert get_action_status(wid) in (
            WorkflowExecutionStatus.RUNNING,
            WorkflowExecutionStatus.COMPLETED,
        )
        assert get_action_result(wid, timeout=RESULT_TIMEOUT) == GreetOutput(
            message=f"Hello, {name}!", count=1
        )
        assert get_action_status(wid) == WorkflowExecutionStatus.COMPLETED


def expect_connection_error(proxy: TlsProxy) -> str:
    started = time.monotonic()
    with pytest.raises(TemporalConnectionError) as info:
        start_action(GREET, {"user_id": new_user(), "name": "nobody"})
    text = str(info.value)
    assert f"127.0.0.1:{proxy.port}" in text, text
    # Not a hang: a refused handshake fails at once, well within the connect timeout.
    assert time.monotonic() - started < CONNECT_TIMEOUT + 30, "took too long"
    return text


# -- TLS --------------------------------------------------------------------------------------


def test_client_and_worker_over_tls_with_server_name(tls_proxy: TlsProxy, pki: Pki) -> None:
    configure(
        host="127.0.0.1",
        port=tls_proxy.port,
        tls_server_ca_cert_path=pki.ca,
        tls_server_name="localhost",
        connect_timeout=CONNECT_TIMEOUT,
    )
    assert get_config().target_url == f"https://127.0.0.1:{tls_proxy.port}"
    before = tls_proxy.connections
    run_greeting_round_trip("Tls")
    assert tls_proxy.connections > before, "the traffic must have gone through the proxy"


def test_tls_verifies_an_ip_address_san_without_a_server_name(
    tls_proxy: TlsProxy, pki: Pki
) -> None:
    configure(
        host="127.0.0.1",
        port=tls_proxy.port,
        tls_server_ca_cert_path=pki.ca,
        connect_timeout=CONNECT_TIMEOUT,
    )
    run_greeting_round_trip("Ip")


def test_wrong_ca_fails_clearly(tls_proxy: TlsProxy, pki: Pki) -> None:
    configure(
        host="127.0.0.1",
        port=tls_proxy.port,
        tls_server_ca_cert_path=pki.other_ca,
        tls_server_name="localhost",
        connect_timeout=CONNECT_TIMEOUT,
    )
    text = expect_connection_error(tls_proxy)
    assert "certificate" in text.lower(), text


def test_wrong_server_name_fails_clearly(tls_proxy: TlsProxy, pki: Pki) -> None:
    configure(
        host="127.0.0.1",
        port=tls_proxy.port,
        tls_server_ca_cert_path=pki.ca,
        tls_server_name="temporal.example.org",
        connect_timeout=CONNECT_TIMEOUT,
    )
    text = expect_connection_error(tls_proxy)
    assert "certificate" in text.lower(), text


def test_plain_client_against_tls_port_fails_clearly(tls_proxy: TlsProxy) -> None:
    configure(host="127.0.0.1", port=tls_proxy.port, connect_timeout=10)
    expect_connection_error(tls_proxy)


# -- mTLS -------------------------------------------------------------------------------------


def test_client_and_worker_over_mtls(mtls_proxy: TlsProxy, pki: Pki) -> None:
    configure(
        host="127.0.0.1",
        port=mtls_proxy.port,
        tls_server_ca_cert_path=pki.ca,
        tls_client_cert_path=pki.client_cert,
        tls_client_key_path=pki.client_key,
        tls_server_name="localhost",
        connect_timeout=CONNECT_TIMEOUT,
    )
    run_greeting_round_trip("Mtls")


def test_mtls_without_client_certificate_fails_clearly(mtls_proxy: TlsProxy, pki: Pki) -> None:
    configure(
        host="127.0.0.1",
        port=mtls_proxy.port,
        tls_server_ca_cert_path=pki.ca,
        tls_server_name="localhost",
        connect_timeout=CONNECT_TIMEOUT,
    )
    expect_connection_error(mtls_proxy)


def test_tls_settings_from_the_environment(
    mtls_proxy: TlsProxy, pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NOMAD_TEMPORAL_HOST", "127.0.0.1")
    monkeypatch.setenv("NOMAD_TEMPORAL_PORT", str(mtls_proxy.port))
    monkeypatch.setenv("NOMAD_TEMPORAL_TLS", "true")
    monkeypatch.setenv("NOMAD_TEMPORAL_TLS_CA_CERT", str(pki.ca))
    monkeypatch.setenv("NOMAD_TEMPORAL_TLS_CLIENT_CERT", str(pki.client_cert))
    monkeypatch.setenv("NOMAD_TEMPORAL_TLS_CLIENT_KEY", str(pki.client_key))
    monkeypatch.setenv("NOMAD_TEMPORAL_TLS_SERVER_NAME", "localhost")
    config = get_config()
    assert config.tls is not None and config.tls.domain == "localhost"
    assert config.tls.client_cert == pki.client_cert.read_bytes()
    run_greeting_round_trip("Env")


# -- API key ----------------------------------------------------------------------------------

# HPACK (RFC 7541) just far enough to find one header. Static table index 23 is
# "authorization". The Huffman codes (Appendix B) of the characters used in the test keys:
_HUFFMAN = {
    " ": ("010100", 6),
    "B": ("1011101", 7),
    "a": ("00011", 5),
    "e": ("00101", 5),
    "r": ("101100", 6),
    "0": ("00000", 5),
    "1": ("00001", 5),
    "2": ("00010", 5),
    "c": ("00100", 5),
    "i": ("00110", 5),
    "o": ("00111", 5),
    "s": ("01000", 5),
    "t": ("01001", 5),
}
AUTHORIZATION_INDEX = 23


def huffman(text: str) -> bytes:
    bits = "".join(_HUFFMAN[c][0] for c in text)
    bits += "1" * (-len(bits) % 8)  # padded with the EOS prefix
    return int(bits, 2).to_bytes(len(bits) // 8, "big")


def _integer(data: bytes, pos: int, prefix: int) -> tuple[int, int]:
    limit = (1 << prefix) - 1
    value = data[pos] & limit
    pos += 1
    if value < limit:
        return value, pos
    shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value += (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos


def _string(data: bytes, pos: int) -> tuple[tuple[bool, bytes], int]:
    is_huffman = bool(data[pos] & 0x80)
    length, pos = _integer(data, pos, 7)
    return (is_huffman, data[pos : pos + length]), pos + length


def header_blocks(stream: bytes) -> Iterator[bytes]:
    """The HPACK header blocks of the requests in a client's HTTP/2 byte stream."""
    preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
    if not stream.startswith(preface):
        return
    pos, block = len(preface), b""
    while pos + 9 <= len(stream):
        length = int.from_bytes(stream[pos : pos + 3], "big")
        kind, flags = stream[pos + 3], stream[pos + 4]
        payload = stream[pos + 9 : pos + 9 + length]
        pos += 9 + length
        if kind == 0x1:  # HEADERS
            if flags & 0x8:  # PADDED
                payload = payload[1 : len(payload) - payload[0]]
            if flags & 0x20:  # PRIORITY
                payload = payload[5:]
            block = payload
        elif kind == 0x9:  # CONTINUATION
            block += payload
        else:
            continue
        if flags & 0x4:  # END_HEADERS
            yield block


def literal_fields(block: bytes) -> Iterator[tuple[int, tuple[bool, bytes]]]:
    """(static or dynamic name index, (huffman?, value bytes)) of each literal field."""
    pos = 0
    while pos < len(block):
        byte = block[pos]
        if byte & 0x80:  # indexed field
            _, pos = _integer(block, pos, 7)
            continue
        if byte & 0xE0 == 0x20:  # dynamic table size update
            _, pos = _integer(block, pos, 5)
            continue
        index, pos = _integer(block, pos, 6 if byte & 0x40 else 4)
        if index == 0:
            _, pos = _string(block, pos)
        value, pos = _string(block, pos)
        yield index, value


def sent_authorizations(proxy: TlsProxy) -> list[tuple[bool, bytes]]:
    return [
        value
        for stream in proxy.client_bytes()
        if stream
        for block in header_blocks(stream)
        for index, value in literal_fields(block)
        if index == AUTHORIZATION_INDEX
    ]


def test_api_key_travels_as_a_bearer_token(tls_proxy: TlsProxy, pki: Pki) -> None:
    """Temporal Cloud style: `api_key` is sent as `authorization: Bearer <key>` on every
    connection (the dev server ignores it; the proxy sees it)."""
    tls = {
        "host": "127.0.0.1",
        "port": tls_proxy.port,
        "tls_server_ca_cert_path": pki.ca,
        "tls_server_name": "localhost",
        "connect_timeout": CONNECT_TIMEOUT,
    }
    configure(**tls)
    run_greeting_round_trip("NoKey")
    assert sent_authorizations(tls_proxy) == [], "no key configured, none sent"

    key = "taco2cat1"
    configure(api_key=key)
    run_greeting_round_trip("Key")
    sent = sent_authorizations(tls_proxy)
    assert sent, "the authorization header was not sent"
    expected = f"Bearer {key}"
    for is_huffman, value in sent:
        assert value == (huffman(expected) if is_huffman else expected.encode())


def test_api_key_alone_turns_tls_on(
    tls_proxy: TlsProxy, pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As in temporalio: an API key without TLS settings means TLS with the system roots
    (here the test CA, through SSL_CERT_FILE) and the host as the server name."""
    monkeypatch.setenv("SSL_CERT_FILE", str(pki.ca))
    monkeypatch.setenv("NOMAD_TEMPORAL_HOST", "127.0.0.1")
    monkeypatch.setenv("NOMAD_TEMPORAL_PORT", str(tls_proxy.port))
    monkeypatch.setenv("NOMAD_TEMPORAL_API_KEY", "secret-2")
    assert get_config().target_url.startswith("https://")
    run_greeting_round_trip("KeyOnly")


def test_api_key_implies_tls_until_it_is_removed() -> None:
    config = configure(api_key="k")
    assert config.tls is not None and config.target_url.startswith("https://")
    assert configure(api_key="").tls is None
    configure(tls_server_name="temporal.example.org", api_key="k")
    assert configure(api_key="").tls is not None, "explicit TLS settings stay"
    assert configure(tls=False).tls is None
