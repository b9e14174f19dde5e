"""The worker's own HTTP/1.1 pool (providers/wire.py: Http11Pool under upstream_client), on real
sockets: every adapter's streaming test of test_provider_streaming.py again through it (timeouts,
drops, hang-ups, a cancel closing the upstream connection, a finished answer's connection kept
alive), then what a plain server can send that the fake provider never does (a body with a
length, one that ends with its connection, gzip, an interim 100, garbage), a kept-alive
connection the server closed meanwhile, read and pool timeouts; TLS, as every hosted provider
speaks it (a certificate it trusts, and one it does not)."""

from __future__ import annotations

import asyncio
import gzip
import ssl
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import httpx
import pytest

from parley_dev.fake_providers import FakeProviderServer
from parley_worker.providers.http import upstream_client
from parley_worker.providers.wire import Http11Pool
from tests.unit.test_provider_streaming import (  # noqa: F401 (run again here, with the fixture below)
    name,
    test_a_connection_dropped_mid_stream_is_a_connection_error,
    test_a_finished_answer_leaves_the_connection_reusable,
    test_a_long_answer_over_a_real_socket,
    test_a_refused_connection_is_a_connection_error,
    test_a_stream_going_quiet_times_out,
    test_an_answer_over_its_total_time_times_out,
    test_cancelling_the_consumer_closes_the_upstream_connection,
    test_closing_the_stream_early_closes_the_upstream_connection,
    test_no_first_token_in_time_times_out_and_closes_upstream,
)


@pytest.fixture
async def provider_http(fake_provider: FakeProviderServer) -> AsyncIterator[httpx.AsyncClient]:
    """The worker's own client, in place of a plain httpx one, for the tests imported above."""
    fake_provider.app.requests.clear()
    fake_provider.app.attempts.clear()
    client = upstream_client(total_timeout_s=60, connect_timeout_s=5, max_streams=100)
    try:
        yield client
    finally:
        await client.aclose()


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def read_request(reader: asyncio.StreamReader) -> bytes:
    """One request's head and body (its body has a content-length, as httpx's JSON bodies do)."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    return head + await reader.readexactly(length)


class Server:
    """A plain asyncio server on a free port answering with `handler`; counts connections."""

    def __init__(self, handler: Handler, tls: ssl.SSLContext | None = None) -> None:
        self.handler = handler
        self.tls = tls
        self.connections = 0
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> str:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.connections += 1
            try:
                await self.handler(reader, writer)
            except (asyncio.IncompleteReadError, ConnectionError):
                pass
            finally:
                writer.close()

        self.server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=self.tls)
        port = self.server.sockets[0].getsockname()[1]
        return f"https://localhost:{port}" if self.tls else f"http://127.0.0.1:{port}"

    async def __aexit__(self, *_: object) -> None:
        assert self.server is not None
        self.server.close()


def pool_client(**limits: float | int | None) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=Http11Pool(limits=httpx.Limits(**limits)), timeout=httpx.Timeout(5.0))  # type: ignore[arg-type]


async def test_a_body_with_a_length_and_one_ending_with_its_connection() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            request = await read_request(reader)
            if b"/until-close" in request:
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nall of it, then EOF")
                await writer.drain()
                return
            writer.write(b"HTTP/1.1 201 Created\r\ncontent-length: 5\r\nx-a: 1\r\n\r\nhello")
            await writer.drain()

    server = Server(handler)
    async with server as url, pool_client() as client:
        for _ in range(2):
            response = await client.post(f"{url}/sized", json={"a": 1})
            assert (response.status_code, response.text, response.headers["x-a"]) == (201, "hello", "1")
            assert response.reason_phrase == "Created"
        assert server.connections == 1, "a body read to its end leaves its connection for the next request"
        response = await client.post(f"{url}/until-close", json={})
        assert response.text == "all of it, then EOF"


async def test_gzip_an_interim_100_and_chunks_split_anywhere() -> None:
    body = b"data: " + b"x" * 3000 + b"\n\n"
    packed = gzip.compress(body)

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        wire = (
            b"HTTP/1.1 100 Continue\r\n\r\n"
            b"HTTP/1.1 200 OK\r\ncontent-encoding: gzip\r\ntransfer-encoding: chunked\r\n\r\n"
            + b"".join(
                b"%x\r\n%s\r\n" % (len(packed[i : i + 100]), packed[i : i + 100]) for i in range(0, len(packed), 100)
            )
            + b"0\r\n\r\n"
        )
        for i in range(0, len(wire), 7):  # 7 bytes at a time: every boundary cut somewhere
            writer.write(wire[i : i + 7])
            await writer.drain()
            await asyncio.sleep(0)

    async with Server(handler) as url, pool_client() as client:
        async with client.stream("POST", url, json={}) as response:
            assert response.status_code == 200
            assert b"".join([part async for part in response.aiter_bytes()]) == body


async def test_a_garbled_answer_and_a_drop_before_any_answer_are_transport_errors() -> None:
    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"NOT HTTP AT ALL\r\n\r\n")
        await writer.drain()

    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)

    for handler in (garbage, hang_up):
        async with Server(handler) as url, pool_client() as client:
            with pytest.raises(httpx.RemoteProtocolError):
                await client.post(url, json={})


async def test_an_idle_connection_the_server_closed_is_not_reused_and_a_request_is_never_sent_twice() -> None:
    served = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal served
        request = await read_request(reader)
        served += 1
        if b"/drop" in request:
            return  # taken, then the connection drops unanswered
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        await writer.drain()
        # Then closes the kept-alive connection while it is idle (a server's idle timeout).

    server = Server(handler)
    async with server as url, pool_client() as client:
        assert (await client.post(url, json={})).text == "ok"
        await asyncio.sleep(0.1)  # the server's close reaches the idle connection
        assert (await client.post(url, json={})).text == "ok"
        assert (server.connections, served) == (2, 2), "a closed idle connection is replaced, not written to"
        # A POST the server took but never answered is an error, never sent again: a provider
        # would run (and bill) the model twice.
        await asyncio.sleep(0.1)
        with pytest.raises(httpx.RemoteProtocolError):
            await client.post(f"{url}/drop", json={})
        assert (server.connections, served) == (3, 3)


async def test_an_idle_connection_expires_and_a_read_timeout_is_a_read_timeout() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            request = await read_request(reader)
            if b"/slow" in request:
                await asyncio.sleep(5)
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            await writer.drain()

    server = Server(handler)
    async with server as url, pool_client(keepalive_expiry=0.05) as client:
        await client.post(url, json={})
        await asyncio.sleep(0.2)
        await client.post(url, json={})
        assert server.connections == 2, "an idle connection past keepalive_expiry is not reused"
        with pytest.raises(httpx.ReadTimeout):
            await client.post(f"{url}/slow", json={}, timeout=httpx.Timeout(5.0, read=0.2))


async def test_requests_past_max_connections_wait_for_one_then_time_out() -> None:
    release = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await read_request(reader)
            await release.wait()
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            await writer.drain()

    server = Server(handler)
    async with server as url, pool_client(max_connections=1) as client:
        first = asyncio.create_task(client.post(url, json={}))
        second = asyncio.create_task(client.post(url, json={}))
        await asyncio.sleep(0.1)
        release.set()
        assert [r.text for r in await asyncio.gather(first, second)] == ["ok", "ok"]
        assert server.connections == 1, "the second request waited for the first one's connection"
        release.clear()
        held = asyncio.create_task(client.post(url, json={}))
        await asyncio.sleep(0.1)
        with pytest.raises(httpx.PoolTimeout):
            await client.post(url, json={}, timeout=httpx.Timeout(5.0, pool=0.1))
        release.set()
        assert (await held).text == "ok"


async def test_a_url_without_http_is_refused() -> None:
    async with pool_client() as client:
        with pytest.raises(httpx.UnsupportedProtocol):
            await client.post("ftp://127.0.0.1/x", json={})


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate for localhost and its key, made with the openssl command."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


async def test_a_stream_over_tls_to_a_trusted_certificate_and_none_to_an_untrusted_one(
    certificate: tuple[Path, Path],
) -> None:
    cert, key = certificate
    served = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    served.load_cert_chain(cert, key)
    events = b"".join(b"data: token %d\n\n" % i for i in range(20))

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
            for i in range(0, len(events), 50):
                writer.write(b"%x\r\n%s\r\n" % (len(events[i : i + 50]), events[i : i + 50]))
                await writer.drain()
            writer.write(b"0\r\n\r\n")
            await writer.drain()

    trusting = ssl.create_default_context(cafile=str(cert))
    server = Server(handler, tls=served)
    async with server as url:
        client = httpx.AsyncClient(transport=Http11Pool(limits=httpx.Limits(), ssl_context=trusting), timeout=5.0)
        async with client:
            for _ in range(2):
                async with client.stream("POST", f"{url}/v1/chat/completions", json={"stream": True}) as response:
                    assert response.status_code == 200
                    assert b"".join([part async for part in response.aiter_bytes()]) == events
            assert server.connections == 1, "the TLS connection is kept alive for the next request"
        # The worker's default context trusts the system's authorities, not this certificate.
        async with pool_client() as untrusting:
            with pytest.raises(httpx.ConnectError):
                await untrusting.post(f"{url}/v1/chat/completions", json={})
