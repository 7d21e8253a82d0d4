"""A connection to a broker: QUIC + TLS 1.3 (aioquic) with ALPN `quiver/1`, verified against a CA,
optional client certificate (mTLS) and token, the Hello handshake, and request streams."""

from __future__ import annotations

import asyncio
import itertools
import os
import socket
from typing import TYPE_CHECKING, Any

from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.quic import events
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection

from . import frame as fr
from .errors import BrokerError, ConnectError, ConnectionClosed, ProtocolError, QuiverError

if TYPE_CHECKING:
    from .admin import Admin

DEFAULT_SERVER = "127.0.0.1:7447"
DEFAULT_CA = "./quiver-data/tls/ca.pem"


class Stream:
    """One bidirectional QUIC stream carrying frames."""

    def __init__(self, proto: "_Protocol", stream_id: int) -> None:
        self._proto = proto
        self.id = stream_id
        self._buf = bytearray()
        self._eof = False
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None

    # fed by the protocol
    def _feed(self, data: bytes, end: bool) -> None:
        self._buf += data
        if end:
            self._eof = True
        self._wake()

    def _fail(self, error: BaseException) -> None:
        if self._error is None:
            self._error = error
        self._wake()

    def _wake(self) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    def write(self, data: bytes, end: bool = False) -> None:
        if self._error is not None:
            raise self._error
        self._proto.send(self.id, data, end)

    def write_frame(self, kind: fr.Kind, header: dict[str, Any], payload: bytes = b"", end: bool = False) -> None:
        data = fr.encode(kind, header, payload)
        if kind != fr.Kind.ADMIN and len(data) - 4 > self._proto.max_frame:
            raise QuiverError(f"frame of {len(data) - 4} bytes exceeds the broker's max_frame {self._proto.max_frame}")
        self.write(data, end)

    def finish(self) -> None:
        self.write(b"", True)

    async def read_frame(self, max_frame: int = fr.DEFAULT_MAX_FRAME) -> fr.Frame | None:
        """The next frame; None when the broker finished the stream between frames."""
        while True:
            total = fr.check(self._buf, max_frame)
            if total is not None:
                f = fr.parse(self._buf, total)
                del self._buf[:total]
                return f
            if self._error is not None:
                raise self._error
            if self._eof:
                if self._buf:
                    raise ProtocolError("stream ended inside a frame")
                return None
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    async def expect(self, kind: fr.Kind) -> fr.Frame:
        f = await self.read_frame()
        if f is None:
            raise ProtocolError(f"stream ended before a {kind.name} frame")
        return fr.expect(f, kind)

    def close(self) -> None:
        self._proto.forget(self.id)


class _Protocol(QuicConnectionProtocol):
    def __init__(self, quic: QuicConnection, stream_handler: Any = None) -> None:
        super().__init__(quic, stream_handler)
        self.streams: dict[int, Stream] = {}
        self.closed_error: ConnectionClosed | None = None
        self.max_frame = fr.DEFAULT_MAX_FRAME

    def open(self) -> Stream:
        if self.closed_error is not None:
            raise self.closed_error
        sid = self._quic.get_next_available_stream_id()
        s = Stream(self, sid)
        self.streams[sid] = s
        return s

    def send(self, sid: int, data: bytes, end: bool) -> None:
        if self.closed_error is not None:
            raise self.closed_error
        self._quic.send_stream_data(sid, data, end)
        self._transmit_soon()

    def forget(self, sid: int) -> None:
        self.streams.pop(sid, None)

    def quic_event_received(self, event: events.QuicEvent) -> None:
        if isinstance(event, events.StreamDataReceived):
            s = self.streams.get(event.stream_id)
            if s is not None:
                s._feed(event.data, event.end_stream)
        elif isinstance(event, events.StreamReset):
            s = self.streams.get(event.stream_id)
            if s is not None:
                s._fail(ProtocolError(f"stream reset by the broker (code {event.error_code})"))
        elif isinstance(event, events.ConnectionTerminated):
            reason = event.reason_phrase or "connection closed"
            self.closed_error = ConnectionClosed(
                f"connection closed: {reason} (code {event.error_code})", event.error_code
            )
            for s in list(self.streams.values()):
                s._fail(self.closed_error)


class Client:
    """A connection to one broker. Use `await Client.connect(...)`; share it between producers and
    consumers (each request kind gets its own QUIC streams)."""

    def __init__(self, proto: _Protocol, transport: asyncio.DatagramTransport, hello_ok: dict[str, Any], client_id: str):
        self._proto = proto
        self._transport = transport
        self.server_info = hello_ok
        self.client_id = client_id
        self._ids = itertools.count(1)
        proto.max_frame = min(int(hello_ok.get("max_frame", fr.DEFAULT_MAX_FRAME)), fr.DEFAULT_MAX_FRAME)

    @classmethod
    async def connect(
        cls,
        server: str | None = None,
        *,
        ca: str | None = None,
        cert: str | None = None,
        key: str | None = None,
        token: str | None = None,
        client_id: str | None = None,
        server_name: str | None = None,
        timeout: float = 10.0,
    ) -> "Client":
        """Connects to `server` (`host:port`, default `QUIVER_SERVER` or 127.0.0.1:7447), trusting
        only the CA in `ca` (default `QUIVER_CA` or ./quiver-data/tls/ca.pem). `cert`/`key`: a
        client certificate (mTLS); `token`: a token user's bearer token (a broker with --auth)."""
        server = server or os.environ.get("QUIVER_SERVER") or DEFAULT_SERVER
        ca = ca or os.environ.get("QUIVER_CA") or DEFAULT_CA
        token = token if token is not None else os.environ.get("QUIVER_TOKEN")
        host, _, port_s = server.rpartition(":")
        host = host.strip("[]")
        if not host or not port_s.isdigit():
            raise ConnectError(f"bad server address {server!r}: expected host:port")
        config = QuicConfiguration(is_client=True, alpn_protocols=[fr.ALPN])
        config.max_data = 64 << 20
        config.max_stream_data = 32 << 20
        config.idle_timeout = 60.0
        try:
            config.load_verify_locations(cafile=ca)
        except (OSError, ValueError) as e:
            raise ConnectError(f"cannot read the CA file {ca}: {e}") from None
        if cert:
            try:
                config.load_cert_chain(cert, key)
            except (OSError, ValueError) as e:
                raise ConnectError(f"cannot read the client certificate {cert}: {e}") from None
        config.server_name = server_name or host
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(host, int(port_s), type=socket.SOCK_DGRAM)
        except OSError as e:
            raise ConnectError(f"cannot resolve {server}: {e}") from None
        family, _, _, _, addr = infos[0]
        quic = QuicConnection(configuration=config)
        transport, proto = await loop.create_datagram_endpoint(
            lambda: _Protocol(quic), family=family, local_addr=("::" if family == socket.AF_INET6 else "0.0.0.0", 0)
        )
        proto = proto  # type: _Protocol
        try:
            proto.connect(addr)
            try:
                await asyncio.wait_for(proto.wait_connected(), timeout)
            except (ConnectionError, asyncio.TimeoutError):
                why = proto.closed_error or "timed out"
                raise ConnectError(
                    f"cannot connect to {server}: {why} (is the broker's certificate signed by the CA {ca}?)"
                ) from None
            cid = client_id or f"quiver-python-{os.getpid()}"
            hello: dict[str, Any] = {"protocol_version": fr.PROTOCOL_VERSION, "client_id": cid}
            if token:
                hello["token"] = token
            s = proto.open()
            try:
                s.write_frame(fr.Kind.HELLO, hello, end=True)
                ok = await asyncio.wait_for(s.expect(fr.Kind.HELLO_OK), timeout)
            except BrokerError as e:
                raise ConnectError(f"broker {server} refused the connection: {e}", int(e.code or 0)) from None
            except ConnectionClosed as e:
                raise ConnectError(f"broker {server} refused the connection: {e}", e.code) from None
            except asyncio.TimeoutError:
                raise ConnectError(f"no answer to Hello from {server}") from None
            finally:
                s.close()
        except BaseException:
            proto.close()
            transport.close()
            raise
        return cls(proto, transport, ok.header, cid)

    @property
    def max_frame(self) -> int:
        return self._proto.max_frame

    def next_request_id(self) -> int:
        return next(self._ids)

    def open_stream(self) -> Stream:
        return self._proto.open()

    async def call(self, kind: fr.Kind, header: dict[str, Any], reply: fr.Kind, payload: bytes = b"") -> fr.Frame:
        """One request on its own stream, one reply frame (or BrokerError)."""
        s = self._proto.open()
        try:
            s.write_frame(kind, header, payload, end=True)
            return await s.expect(reply)
        finally:
            s.close()

    @property
    def admin(self) -> "Admin":
        from .admin import Admin

        return Admin(self)

    @property
    def closed(self) -> bool:
        return self._proto.closed_error is not None

    async def close(self) -> None:
        if self._proto.closed_error is None:
            self._proto.close(error_code=0, reason_phrase="client closed")
            try:
                await asyncio.wait_for(self._proto.wait_closed(), 1.0)
            except asyncio.TimeoutError:
                pass
        self._transport.close()

    async def __aenter__(self) -> "Client":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
