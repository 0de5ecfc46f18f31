"""Media inputs: MIME sniffing, bytea values, and URL fetches with their guards.

No PostgreSQL. The only network peer is a server these tests start on
127.0.0.1. An audit hook, active during every test here, makes sure of it: it
blocks any connection to another address and any name lookup that would
need DNS, so the refusal tests prove that nothing was sent before refusing.
"""

from __future__ import annotations

import io
import ipaddress
import math
import shutil
import socket
import socketserver
import ssl
import struct
import subprocess
import sys
import threading
import time
import wave
import zlib
from collections.abc import Callable, Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from hf_fdw import media
from hf_fdw.errors import HfFdwError
from hf_fdw.media import (
    Media,
    MediaSession,
    address_class,
    media_from_value,
    sniff_mime,
)

# --- Samples ----------------------------------------------------------------


def png_bytes(width: int = 2, height: int = 1) -> bytes:
    """A real PNG: red pixels, 8-bit RGB."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data)
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    rows = b"".join(b"\x00" + b"\xff\x00\x00" * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def wav_bytes(seconds: float = 0.05, rate: int = 8000) -> bytes:
    """A real WAV: a 440 Hz tone, 16-bit mono PCM."""
    frames = b"".join(
        struct.pack("<h", int(8000 * math.sin(2 * math.pi * 440 * n / rate)))
        for n in range(int(seconds * rate))
    )
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(frames)
    return buffer.getvalue()


def gif_bytes() -> bytes:
    """A real 1x1 GIF: a two-colour table, one pixel of colour 0."""
    screen = struct.pack("<HHBBB", 1, 1, 0x80, 0, 0)
    table = b"\x00\x00\x00\xff\xff\xff"
    image = b"\x2c" + struct.pack("<HHHHB", 0, 0, 1, 1, 0)
    # LZW, minimum code size 2: clear (4), index 0, end (5), 3 bits each.
    pixels = b"\x02" + b"\x02\x44\x01" + b"\x00"
    return b"GIF89a" + screen + table + image + pixels + b"\x3b"


def bmp_bytes() -> bytes:
    """A real 1x1 24-bit BMP."""
    pixels = b"\x00\x00\xff\x00"
    info = struct.pack("<IiiHHIIiiII", 40, 1, 1, 1, 24, 0, 4, 2835, 2835, 0, 0)
    header = b"BM" + struct.pack("<IHHI", 14 + 40 + 4, 0, 0, 14 + 40)
    return header + info + pixels


def jpeg_bytes() -> bytes:
    """A JPEG's start: SOI and a JFIF APP0 segment, then EOI."""
    app0 = b"\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    return b"\xff\xd8" + app0 + b"\xff\xd9"


def ebml(doc_type: bytes) -> bytes:
    """An EBML header naming ``doc_type``, as WebM and Matroska files start."""
    body = (
        b"\x42\x86\x81\x01\x42\xf7\x81\x01\x42\xf2\x81\x04\x42\xf3\x81\x08"
        + b"\x42\x82"
        + bytes([0x80 | len(doc_type)])
        + doc_type
        + b"\x42\x87\x81\x04\x42\x85\x81\x02"
    )
    return b"\x1a\x45\xdf\xa3" + bytes([0x80 | len(body)]) + body


def ftyp(brand: bytes) -> bytes:
    """An ISO base media file's first box, with ``brand`` as its major brand."""
    return b"\x00\x00\x00\x18ftyp" + brand + b"\x00\x00\x00\x00" + brand + b"isom"


PNG = png_bytes()
WAV = wav_bytes()

SAMPLES = {
    "jpeg": (jpeg_bytes(), "image/jpeg"),
    "png": (PNG, "image/png"),
    "gif": (gif_bytes(), "image/gif"),
    "webp": (
        b"RIFF\x1a\x00\x00\x00WEBPVP8L\x0d\x00\x00\x00\x2f\x00\x00\x00" + b"\x00" * 9,
        "image/webp",
    ),
    "bmp": (bmp_bytes(), "image/bmp"),
    "tiff little-endian": (b"II*\x00\x08\x00\x00\x00\x00\x00", "image/tiff"),
    "tiff big-endian": (b"MM\x00*\x00\x00\x00\x08\x00\x00", "image/tiff"),
    "avif": (ftyp(b"avif"), "image/avif"),
    "heic": (ftyp(b"heic"), "image/heic"),
    "flac": (b"fLaC\x80\x00\x00\x22" + b"\x00" * 34, "audio/flac"),
    "wav": (WAV, "audio/wav"),
    "mp3 with ID3": (b"ID3\x04\x00\x00\x00\x00\x00\x00\xff\xfb\x90\x64", "audio/mpeg"),
    "mp3 frame, MPEG-1": (b"\xff\xfb\x90\x64" + b"\x00" * 40, "audio/mpeg"),
    "mp3 frame, MPEG-2": (b"\xff\xf3\x48\xc4" + b"\x00" * 40, "audio/mpeg"),
    "aac adts": (b"\xff\xf1\x50\x80\x02\x1f\xfc" + b"\x00" * 8, "audio/aac"),
    "ogg": (b"OggS\x00\x02" + b"\x00" * 22 + b"\x01vorbis", "audio/ogg"),
    "webm": (ebml(b"webm"), "audio/webm"),
    "matroska": (ebml(b"matroska"), "audio/x-matroska"),
    "m4a": (ftyp(b"M4A "), "audio/mp4"),
    "mp4": (ftyp(b"isom"), "audio/mp4"),
    "aiff": (b"FORM\x00\x00\x00\x2eAIFFCOMM", "audio/aiff"),
}


@pytest.mark.parametrize("name", list(SAMPLES))
def test_sniff_names_each_format(name: str) -> None:
    data, mime = SAMPLES[name]
    assert sniff_mime(data) == mime


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"hello, world",
        b"<!doctype html><html></html>",
        b"BMW 320i, a car, not a bitmap",
        b"RIFF\x24\x00\x00\x00AVI LIST",
        b"\xff\xff\xff\xff\x00\x00",
        b"\x1a\x45\xdf\xa3\x84\x42\x86\x81\x01",
        b"%PDF-1.7",
    ],
)
def test_sniff_gives_none_for_anything_else(data: bytes) -> None:
    assert sniff_mime(data) is None


def test_sample_wav_is_real_pcm() -> None:
    with wave.open(io.BytesIO(WAV)) as audio:
        assert (audio.getframerate(), audio.getnframes()) == (8000, 400)


# --- bytea values -----------------------------------------------------------


def from_bytes(value: Any, max_bytes: int = 1_000_000) -> Media:
    return media_from_value(value, allow_private=False, max_bytes=max_bytes, timeout=1)


def error_of(call: Callable[[], Any]) -> HfFdwError:
    with pytest.raises(HfFdwError) as caught:
        call()
    return caught.value


def test_bytes_are_used_as_they_are() -> None:
    assert from_bytes(PNG) == Media(
        PNG, "image/png", f"a bytea value of {len(PNG)} bytes"
    )


def test_bytearray_and_memoryview_become_bytes() -> None:
    wav = from_bytes(bytearray(WAV))
    jpeg = from_bytes(memoryview(jpeg_bytes()))
    assert (type(wav.data), wav.data, wav.mime) == (bytes, WAV, "audio/wav")
    assert (type(jpeg.data), jpeg.data, jpeg.mime) == (
        bytes,
        jpeg_bytes(),
        "image/jpeg",
    )


def test_media_repr_leaves_the_bytes_out() -> None:
    text = repr(from_bytes(PNG))
    assert "IHDR" not in text and "\\x89" not in text
    assert "image/png" in text


def test_unknown_bytes_are_refused_with_the_accepted_types() -> None:
    error = error_of(lambda: from_bytes(b"%PDF-1.7 not media"))
    assert error.message == "unknown media type in a bytea value of 18 bytes"
    assert error.detail is not None and "25 50 44 46" in error.detail
    assert error.hint is not None
    assert "PNG" in error.hint and "JPEG" in error.hint and "FLAC" in error.hint


def test_empty_bytes_are_refused() -> None:
    error = error_of(lambda: from_bytes(b""))
    assert error.message == "media input is an empty bytea value"


def test_bytes_over_the_limit_are_refused() -> None:
    error = error_of(lambda: from_bytes(PNG, max_bytes=10))
    assert error.message == (
        f"media input is {len(PNG)} bytes, over the limit of 10 bytes"
    )


@pytest.mark.parametrize(("value", "kind"), [(None, "NULL"), (42, "int")])
def test_other_values_are_refused(value: Any, kind: str) -> None:
    error = error_of(lambda: from_bytes(value))
    assert error.message == f"media input must be bytea or text, not {kind}"


# --- A network watch ----------------------------------------------------------


class NetworkWatch:
    """What sockets did while a test ran, through Python's audit events.

    Connecting anywhere but 127.0.0.1, or a lookup that is not of a numeric
    address (so would ask DNS), raises inside the audited call: it never
    happens. Audit hooks cannot be removed, so the hook stays installed and
    only acts while ``active``.
    """

    def __init__(self) -> None:
        self.active = False
        self.connects: list[tuple[Any, ...]] = []
        self.lookups: list[str] = []
        self.blocked: list[str] = []
        sys.addaudithook(self._hook)

    def reset(self) -> None:
        self.connects.clear()
        self.lookups.clear()
        self.blocked.clear()

    def _hook(self, event: str, args: tuple[Any, ...]) -> None:
        if not self.active or not event.startswith("socket."):
            return
        if event == "socket.connect":
            address = args[1]
            if not (isinstance(address, tuple) and address[0] == "127.0.0.1"):
                self._block(f"connect to {address!r}")
            self.connects.append(address)
        elif event == "socket.getaddrinfo":
            host = args[0]
            if isinstance(host, bytes):
                host = host.decode()
            if not isinstance(host, str) or not self._numeric(host):
                self._block(f"name lookup of {host!r}")
            self.lookups.append(host)
        elif event in (
            "socket.gethostbyname",
            "socket.gethostbyname_ex",
            "socket.gethostbyaddr",
            "socket.getnameinfo",
        ):
            self._block(f"{event} {args!r}")

    def _block(self, what: str) -> None:
        self.blocked.append(what)
        raise RuntimeError(f"test network watch: blocked {what}")

    @staticmethod
    def _numeric(host: str) -> bool:
        try:
            socket.inet_aton(host)
            return True
        except OSError:
            pass
        try:
            ipaddress.ip_address(host)
            return True
        except ValueError:
            return False


WATCH = NetworkWatch()


@pytest.fixture(autouse=True)
def network() -> Iterator[NetworkWatch]:
    """The watch, active for the test; no blocked attempt may be left over."""
    WATCH.reset()
    WATCH.active = True
    try:
        yield WATCH
    finally:
        WATCH.active = False
    assert WATCH.blocked == []


def test_the_watch_blocks_other_addresses_before_any_packet(
    network: NetworkWatch,
) -> None:
    # The audit event comes before the system call, so nothing is sent.
    with socket.socket() as sock, pytest.raises(RuntimeError, match="blocked"):
        sock.connect(("192.0.2.1", 80))
    with pytest.raises(RuntimeError, match="blocked"):
        socket.getaddrinfo("media.invalid", 80)
    assert network.blocked == [
        "connect to ('192.0.2.1', 80)",
        "name lookup of 'media.invalid'",
    ]
    network.blocked.clear()


# --- Paths, schemes, addresses: refused before any connection ---------------


def url_error(url: str, allow_private: bool = False, **options: Any) -> HfFdwError:
    return error_of(
        lambda: media_from_value(
            url, allow_private=allow_private, max_bytes=1_000_000, timeout=2, **options
        )
    )


@pytest.mark.parametrize(
    "path",
    [
        "/etc/passwd",
        "  /var/lib/postgresql/data/pg_hba.conf  ",
        "./x.jpg",
        "../secret.wav",
        "file:///etc/passwd",
        "FILE://localhost/etc/shadow",
        "file:/etc/passwd",
        "C:\\Users\\me\\cat.jpg",
        "c:/cat.jpg",
        "~/x.jpg",
        "~postgres/.pgpass",
        "\\\\fileserver\\share\\a.png",
        "images/cat.png",
        "cat.jpg",
    ],
)
def test_paths_on_the_server_are_never_read(path: str, network: NetworkWatch) -> None:
    error = url_error(path, allow_private=True)
    assert error.message.endswith(
        "looks like a file path: paths on the database server are never read"
    )
    assert error.hint is not None and "bytea" in error.hint
    assert (network.connects, network.lookups) == ([], [])


@pytest.mark.parametrize(
    ("url", "scheme"),
    [
        ("ftp://example.com/a.png", "ftp"),
        ("data:image/png;base64,iVBORw0KGgo=", "data"),
        ("gopher://example.com/1", "gopher"),
        ("javascript:alert(1)", "javascript"),
        ("s3://bucket/key.png", "s3"),
        ("ws://example.com/stream", "ws"),
        ("HTTPX://example.com/a.png", "httpx"),
    ],
)
def test_other_schemes_are_refused(
    url: str, scheme: str, network: NetworkWatch
) -> None:
    error = url_error(url)
    assert error.message == f"media URL scheme {scheme!r} is not supported"
    assert error.hint is not None and "http:// and https://" in error.hint
    assert (network.connects, network.lookups) == ([], [])


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "media input is an empty string"),
        ("hello", "media input 'hello' is not a URL"),
        ("\\x89504e470d0a1a0a", "media input is bytea text output (\\x...), not a URL"),
        ("http:///cat.png", "media URL http:///cat.png has no host"),
        (
            "http://example.com/a cat.png",
            (
                "media URL 'http://example.com/a cat.png' contains spaces or "
                "control characters"
            ),
        ),
        (
            "http://example.com:99999/a.png?sig=secret",
            (
                "media URL http://example.com:99999/a.png?... has a port that is "
                "not a number from 0 to 65535"
            ),
        ),
        (
            "http://[fe80::1%25eth0]/a.png",
            "media URL http://[fe80::1%25eth0]/a.png names an IPv6 zone",
        ),
    ],
)
def test_malformed_inputs_are_refused(
    value: str, message: str, network: NetworkWatch
) -> None:
    assert url_error(value).message == message
    assert (network.connects, network.lookups) == ([], [])


def test_credentials_in_a_url_are_refused_and_not_repeated() -> None:
    error = url_error("https://alice:s3cret@example.com/cat.png?sig=topsecret")
    assert error.message == "media URLs with a user name or password are not fetched"
    assert error.detail == "the URL, without them: https://example.com/cat.png?..."
    assert "s3cret" not in str(error) and "topsecret" not in str(error)


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        ("http://127.0.0.1:9/x.png", "loopback"),
        ("http://[::1]/x.png", "loopback"),
        ("http://10.0.0.1/x.png", "private"),
        ("http://172.16.5.4/x.png", "private"),
        ("http://192.168.1.1/x.png", "private"),
        ("http://[fd12:3456::1]/x.png", "private"),
        ("http://169.254.10.1/x.png", "link-local"),
        ("http://[fe80::1]/x.png", "link-local"),
        ("http://0.0.0.0/x.png", "unspecified"),
        ("http://[::]/x.png", "unspecified"),
        ("http://224.0.0.1/x.png", "multicast"),
        ("http://[ff02::1]/x.png", "multicast"),
        ("http://240.0.0.1/x.png", "reserved"),
        ("http://100.64.0.1/x.png", "special-purpose (not publicly routable)"),
        ("http://[::ffff:127.0.0.1]/x.png", "loopback (IPv4 127.0.0.1 inside IPv6)"),
        ("http://[::ffff:10.0.0.1]/x.png", "private (IPv4 10.0.0.1 inside IPv6)"),
        ("http://[64:ff9b::a00:1]/x.png", "private (IPv4 10.0.0.1 inside IPv6)"),
        ("http://[2002:c0a8:101::]/x.png", "private (IPv4 192.168.1.1 inside IPv6)"),
        ("http://2130706433/x.png", "loopback"),
        ("http://0x7f.1/x.png", "loopback"),
        ("http://127.1/x.png", "loopback"),
    ],
)
def test_non_public_addresses_are_refused_before_connecting(
    url: str, kind: str, network: NetworkWatch
) -> None:
    error = url_error(url)
    assert error.message.startswith("refused to fetch media from ")
    assert error.message.endswith(f": it is a {kind} address".replace("a u", "an u"))
    assert error.hint is not None and "allow_private_urls" in error.hint
    assert network.connects == []


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://[::ffff:169.254.169.254]/latest/meta-data/",
        "http://[fd00:ec2::254]/latest/meta-data/",
    ],
)
@pytest.mark.parametrize("allow_private", [False, True])
def test_metadata_services_are_refused_even_when_private_urls_are_allowed(
    url: str, allow_private: bool, network: NetworkWatch
) -> None:
    error = url_error(url, allow_private=allow_private)
    assert "it is a cloud metadata service address" in error.message
    assert error.hint == "this address is never fetched, whatever the engine's options"
    assert network.connects == []


@pytest.mark.parametrize(
    "address",
    ["93.184.215.14", "8.8.8.8", "2606:4700:4700::1111", "2a00:1450:4001:80e::200e"],
)
def test_public_addresses_have_no_class(address: str) -> None:
    assert address_class(ipaddress.ip_address(address)) is None


# --- Fake names: a resolver for tests, and a stand-in for a public host ------

# An address of example.com. It is never dialled: the ``stand_in`` fixture
# sends connections meant for it to the test server on 127.0.0.1.
PUBLIC = "93.184.215.14"


class FakeResolver:
    """socket.getaddrinfo for made-up names; records every name it resolves.

    Each name maps to a list of answers, one list per call (the last repeats),
    so that a name can change its address between lookups.
    """

    def __init__(self, names: dict[str, list[list[str]]]) -> None:
        self.names = names
        self.calls: list[str] = []

    def __call__(
        self, host: str, port: int, family: int = 0, kind: int = 0
    ) -> Sequence[tuple[Any, ...]]:
        self.calls.append(host)
        rounds = self.names.get(host, [[host]])
        addresses = rounds[min(self.calls.count(host), len(rounds)) - 1]
        answers: list[tuple[Any, ...]] = []
        for address in addresses:
            answers += socket.getaddrinfo(address, port, family, kind)
        return answers


@pytest.fixture
def stand_in(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """Dial 127.0.0.1 where the code dials PUBLIC; list what the code dialled."""
    dialled: list[tuple[str, int]] = []
    real_dial = media._dial

    def dial(
        family: int, kind: int, proto: int, sockaddr: tuple[Any, ...], *rest: Any
    ) -> socket.socket:
        dialled.append((sockaddr[0], sockaddr[1]))
        if sockaddr[0] == PUBLIC:
            sockaddr = ("127.0.0.1", sockaddr[1])
        return real_dial(family, kind, proto, sockaddr, *rest)

    monkeypatch.setattr(media, "_dial", dial)
    return dialled


def test_a_name_that_resolves_to_a_private_address_is_refused(
    stand_in: list[tuple[str, int]],
) -> None:
    resolve = FakeResolver({"intranet.example": [["10.1.2.3"]]})
    error = url_error("http://intranet.example/cat.png", resolve=resolve)
    assert error.message == (
        "refused to fetch media from intranet.example (10.1.2.3): it is a "
        "private address"
    )
    assert (resolve.calls, stand_in) == (["intranet.example"], [])


def test_a_name_with_any_private_address_is_refused(
    stand_in: list[tuple[str, int]],
) -> None:
    resolve = FakeResolver({"mixed.example": [[PUBLIC, "127.0.0.1"]]})
    error = url_error("http://mixed.example/cat.png", resolve=resolve)
    assert "mixed.example (127.0.0.1): it is a loopback address" in error.message
    assert stand_in == []


# --- A media server on 127.0.0.1 --------------------------------------------

BIG = 50_000_000  # what the oversize routes would send, if let


class MediaServer:
    """A threaded HTTP server on 127.0.0.1 with the routes the tests need."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.paths: list[str] = []
        self.headers: list[dict[str, str]] = []
        self.written: dict[str, int] = {}
        self.stopping = threading.Event()
        self._httpd = _Server(("127.0.0.1", 0), self._handler_class())
        if tls is not None:
            self._httpd.socket = tls.wrap_socket(self._httpd.socket, server_side=True)
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    def url(self, path: str, host: str = "127.0.0.1", scheme: str = "http") -> str:
        return f"{scheme}://{host}:{self.port}{path}"

    def reset(self) -> None:
        self.paths.clear()
        self.headers.clear()
        self.written.clear()

    def wait_written(self, path: str) -> int:
        """Bytes the route wrote before the client went away."""
        for _ in range(500):
            if path in self.written:
                return self.written[path]
            time.sleep(0.01)
        raise AssertionError(f"{path} never stopped writing")

    def close(self) -> None:
        self.stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                path = self.path.split("?", 1)[0]
                server.paths.append(path)
                server.headers.append(dict(self.headers.items()))
                route = ROUTES.get(path)
                if route is None and path.startswith("/r/"):
                    route = redirect_chain
                if route is None:
                    reply(self, 404, b"no such file", "text/plain")
                    return
                route(self, server)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def server_bind(self) -> None:
        # HTTPServer's own looks the host name up; a test needs no lookup.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients that hang up early are the point of several tests


Route = Callable[[BaseHTTPRequestHandler, MediaServer], None]


def reply(
    handler: BaseHTTPRequestHandler,
    status: int,
    body: bytes,
    content_type: str | None,
    headers: dict[str, str] | None = None,
) -> None:
    handler.send_response(status)
    if content_type:
        handler.send_header("Content-Type", content_type)
    for name, value in (headers or {}).items():
        handler.send_header(name, value)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


def redirect(to: str) -> Route:
    def route(handler: BaseHTTPRequestHandler, server: MediaServer) -> None:
        location = to.replace("{port}", str(server.port))
        reply(handler, 302, b"", None, {"Location": location})

    return route


def redirect_chain(handler: BaseHTTPRequestHandler, server: MediaServer) -> None:
    """/r/N redirects to /r/N-1, and /r/0 to /cat.png: N + 1 redirects in all."""
    left = int(handler.path.split("?")[0].removeprefix("/r/"))
    target = "/cat.png" if left == 0 else f"/r/{left - 1}"
    reply(handler, 302, b"", None, {"Location": target})


def flood(handler: BaseHTTPRequestHandler, server: MediaServer, framing: str) -> None:
    """Send BIG bytes of PNG-looking data, until the client hangs up."""
    path = handler.path
    handler.protocol_version = "HTTP/1.1" if framing == "chunked" else "HTTP/1.0"
    handler.send_response(200)
    handler.send_header("Content-Type", "image/png")
    if framing == "length":
        handler.send_header("Content-Length", str(BIG))
    if framing == "chunked":
        handler.send_header("Transfer-Encoding", "chunked")
    handler.send_header("Connection", "close")
    handler.end_headers()
    block = PNG + b"\x00" * (65_536 - len(PNG))
    written = 0
    try:
        while written < BIG and not server.stopping.is_set():
            if framing == "chunked":
                handler.wfile.write(b"%x\r\n" % len(block) + block + b"\r\n")
            else:
                handler.wfile.write(block)
            written += len(block)
    except OSError:
        pass
    finally:
        server.written[path] = written
        handler.close_connection = True


def slow(handler: BaseHTTPRequestHandler, server: MediaServer) -> None:
    """Answer after 5 s (or when the server stops)."""
    server.stopping.wait(5)
    try:
        reply(handler, 200, PNG, "image/png")
    except OSError:
        pass


def drip(handler: BaseHTTPRequestHandler, server: MediaServer) -> None:
    """Send the headers at once, then one byte every 50 ms: each read is quick."""
    body = PNG + b"\x00" * 1000
    handler.send_response(200)
    handler.send_header("Content-Type", "image/png")
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    try:
        for index in range(len(body)):
            if server.stopping.wait(0.05):
                break
            handler.wfile.write(body[index : index + 1])
            handler.wfile.flush()
    except OSError:
        pass


def serve(body: bytes, content_type: str | None, **headers: str) -> Route:
    def route(handler: BaseHTTPRequestHandler, server: MediaServer) -> None:
        reply(handler, 200, body, content_type, headers)

    return route


ROUTES: dict[str, Route] = {
    "/cat.png": serve(PNG, "image/png"),
    "/tone.wav": serve(WAV, "audio/wav"),
    "/cat-as-text": serve(PNG, "text/plain"),
    "/noise": serve(b"\x00\x01\x02\x03 no magic here", "audio/x-custom; rate=8000"),
    "/page": serve(b"<!doctype html><p>not an image</p>", "text/html; charset=utf-8"),
    "/nothing": serve(b"", "image/png"),
    "/gzipped": serve(zlib.compress(PNG), "image/png", **{"Content-Encoding": "gzip"}),
    "/teapot": lambda handler, server: reply(handler, 418, b"short and stout", None),
    "/big-with-length": lambda handler, server: flood(handler, server, "length"),
    "/big-without-length": lambda handler, server: flood(handler, server, "close"),
    "/big-chunked": lambda handler, server: flood(handler, server, "chunked"),
    "/slow": slow,
    "/drip": drip,
    "/relative": redirect("cat.png"),
    "/to-loopback": redirect("http://127.0.0.1:{port}/cat.png"),
    "/to-metadata": redirect("http://169.254.169.254/latest/meta-data/"),
    "/to-file": redirect("file:///etc/passwd"),
    "/with-cookie": lambda handler, server: reply(
        handler, 302, b"", None, {"Location": "/cat.png", "Set-Cookie": "id=abc123"}
    ),
}


@pytest.fixture(scope="module")
def _media_server() -> Iterator[MediaServer]:
    server = MediaServer()
    yield server
    server.close()


@pytest.fixture
def server(_media_server: MediaServer) -> MediaServer:
    _media_server.reset()
    return _media_server


def fetch(url: str, **options: Any) -> Media:
    values: dict[str, Any] = {
        "allow_private": True,
        "max_bytes": 1_000_000,
        "timeout": 5.0,
    }
    values.update(options)
    return media_from_value(url, **values)


def fetch_error(url: str, **options: Any) -> HfFdwError:
    return error_of(lambda: fetch(url, **options))


# --- Downloads ----------------------------------------------------------------


def test_a_png_is_downloaded_when_private_urls_are_allowed(
    server: MediaServer, network: NetworkWatch
) -> None:
    url = server.url("/cat.png")
    assert fetch(url) == Media(PNG, "image/png", url)
    assert network.connects == [("127.0.0.1", server.port)]


def test_a_wav_is_downloaded(server: MediaServer) -> None:
    result = fetch(server.url("/tone.wav"))
    assert (result.data, result.mime) == (WAV, "audio/wav")


def test_the_same_url_is_refused_when_private_urls_are_not_allowed(
    server: MediaServer, network: NetworkWatch
) -> None:
    error = fetch_error(server.url("/cat.png"), allow_private=False)
    assert error.message == (
        "refused to fetch media from 127.0.0.1: it is a loopback address"
    )
    assert (server.paths, network.connects) == ([], [])


def test_requests_carry_no_credentials_and_ask_for_plain_bytes(
    server: MediaServer,
) -> None:
    fetch(server.url("/with-cookie"))
    assert server.paths == ["/with-cookie", "/cat.png"]
    for headers in server.headers:
        names = {name.lower() for name in headers}
        assert not names & {"authorization", "cookie", "proxy-authorization"}
        assert headers["User-Agent"] == "hf_fdw/0.1"
        assert headers["Accept-Encoding"] == "identity"


def test_the_source_leaves_the_query_out(server: MediaServer) -> None:
    result = fetch(server.url("/cat.png?X-Amz-Signature=topsecret"))
    assert result.source == server.url("/cat.png?...")
    assert result.data == PNG


def test_the_bytes_decide_the_type_over_the_header(server: MediaServer) -> None:
    assert fetch(server.url("/cat-as-text")).mime == "image/png"


def test_an_audio_content_type_is_used_when_the_bytes_are_unknown(
    server: MediaServer,
) -> None:
    result = fetch(server.url("/noise"))
    assert (result.mime, result.data) == (
        "audio/x-custom",
        b"\x00\x01\x02\x03 no magic here",
    )


def test_unknown_bytes_with_a_non_media_type_are_refused(server: MediaServer) -> None:
    error = fetch_error(server.url("/page"))
    assert error.message == f"unknown media type in {server.url('/page')}"
    assert error.detail == (
        "the bytes are no known image or audio format, and the server calls "
        "them 'text/html'"
    )
    assert error.hint == media.ACCEPTED_HINT


def test_an_empty_body_is_refused(server: MediaServer) -> None:
    assert fetch_error(server.url("/nothing")).message == (
        f"media URL {server.url('/nothing')} gave an empty body"
    )


def test_a_compressed_body_is_refused(server: MediaServer) -> None:
    error = fetch_error(server.url("/gzipped"))
    assert error.message == "media host 127.0.0.1 sent the file compressed (gzip)"


@pytest.mark.parametrize(
    ("path", "status", "hint"),
    [
        ("/missing.png", 404, "check the URL: it must point at the image or audio"),
        ("/teapot", 418, None),
    ],
)
def test_a_status_other_than_200_is_an_error(
    server: MediaServer, path: str, status: int, hint: str | None
) -> None:
    error = fetch_error(server.url(path))
    assert error.message == f"media host 127.0.0.1 answered HTTP {status}"
    assert error.detail == f"fetching {server.url(path)}"
    if hint is None:
        assert error.hint is None
    else:
        assert error.hint is not None and error.hint.startswith(hint)


def test_a_closed_port_is_a_connection_error() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    error = fetch_error(f"http://127.0.0.1:{port}/cat.png")
    assert error.message == "could not fetch media from 127.0.0.1"
    assert error.detail == "Connection refused"


# --- Size and time limits -----------------------------------------------------


def test_an_announced_oversize_body_fails_before_it_is_read(
    server: MediaServer,
) -> None:
    started = time.monotonic()
    error = fetch_error(server.url("/big-with-length"), max_bytes=100_000)
    assert error.message == (
        "media from 127.0.0.1 is larger than the limit of 100000 bytes"
    )
    assert error.detail == f"the server announced {BIG} bytes"
    assert time.monotonic() - started < 2
    assert server.wait_written("/big-with-length") < BIG // 2


@pytest.mark.parametrize("path", ["/big-without-length", "/big-chunked"])
def test_an_unannounced_oversize_body_is_cut_at_the_limit(
    server: MediaServer, path: str
) -> None:
    started = time.monotonic()
    error = fetch_error(server.url(path), max_bytes=100_000)
    assert error.message == (
        "media from 127.0.0.1 is larger than the limit of 100000 bytes"
    )
    assert error.detail is not None
    stopped_after = int(error.detail.split()[-2])
    assert 100_000 < stopped_after <= 100_000 + media.CHUNK
    assert time.monotonic() - started < 2
    assert server.wait_written(path) < BIG // 2


def test_a_server_that_does_not_answer_times_out(server: MediaServer) -> None:
    started = time.monotonic()
    error = fetch_error(server.url("/slow"), timeout=0.5)
    assert error.message == "media download from 127.0.0.1 did not finish within 0.5 s"
    assert 0.4 < time.monotonic() - started < 2


def test_a_server_that_drips_bytes_times_out_on_the_whole_download(
    server: MediaServer,
) -> None:
    started = time.monotonic()
    error = fetch_error(server.url("/drip"), timeout=1.0)
    assert error.message == "media download from 127.0.0.1 did not finish within 1 s"
    assert 0.9 < time.monotonic() - started < 2.5


# --- Redirects ----------------------------------------------------------------


def test_three_redirects_are_followed(server: MediaServer) -> None:
    result = fetch(server.url("/r/2"))
    assert (result.data, result.mime, result.source) == (
        PNG,
        "image/png",
        server.url("/r/2"),
    )
    assert server.paths == ["/r/2", "/r/1", "/r/0", "/cat.png"]


def test_a_fourth_redirect_is_refused(server: MediaServer) -> None:
    error = fetch_error(server.url("/r/3"))
    assert (
        error.message == f"media URL {server.url('/r/3')} redirects more than 3 times"
    )
    assert server.paths == ["/r/3", "/r/2", "/r/1", "/r/0"]


def test_a_relative_redirect_is_followed(server: MediaServer) -> None:
    assert fetch(server.url("/relative")).data == PNG
    assert server.paths == ["/relative", "/cat.png"]


def test_a_redirect_to_a_file_is_refused(server: MediaServer) -> None:
    error = fetch_error(server.url("/to-file"))
    assert error.message.endswith("paths on the database server are never read")
    assert error.detail is not None
    assert error.detail.endswith(
        f"reached by 1 redirect(s) from {server.url('/to-file')}"
    )


def test_a_redirect_to_the_metadata_service_is_refused(
    server: MediaServer, network: NetworkWatch
) -> None:
    error = fetch_error(server.url("/to-metadata"))
    assert error.message == (
        "refused to fetch media from 169.254.169.254: it is a cloud metadata "
        "service address"
    )
    assert network.connects == [("127.0.0.1", server.port)]


def test_a_public_host_redirecting_to_loopback_is_refused(
    server: MediaServer, stand_in: list[tuple[str, int]], network: NetworkWatch
) -> None:
    resolve = FakeResolver({"media.example": [[PUBLIC]]})
    url = server.url("/to-loopback", host="media.example")
    error = fetch_error(url, allow_private=False, resolve=resolve)
    assert error.message == (
        "refused to fetch media from 127.0.0.1: it is a loopback address"
    )
    assert error.detail is not None
    assert error.detail.endswith(f"reached by 1 redirect(s) from {url}")
    assert server.paths == ["/to-loopback"]
    assert stand_in == [(PUBLIC, server.port)]
    assert network.connects == [("127.0.0.1", server.port)]


def test_a_public_host_redirecting_to_loopback_works_when_allowed(
    server: MediaServer, stand_in: list[tuple[str, int]]
) -> None:
    resolve = FakeResolver({"media.example": [[PUBLIC]]})
    url = server.url("/to-loopback", host="media.example")
    result = fetch(url, allow_private=True, resolve=resolve)
    assert (result.data, result.source) == (PNG, url)
    assert stand_in == [(PUBLIC, server.port), ("127.0.0.1", server.port)]


def test_each_connection_goes_to_the_address_that_was_checked(
    server: MediaServer, stand_in: list[tuple[str, int]]
) -> None:
    # The name answers a public address first, then loopback (DNS rebinding).
    # One lookup per connection, and the connection goes where it pointed.
    resolve = FakeResolver({"rebind.example": [[PUBLIC], [PUBLIC], ["127.0.0.1"]]})
    url = server.url("/cat.png", host="rebind.example")
    result = fetch(url, allow_private=False, resolve=resolve)
    assert result.data == PNG
    assert (resolve.calls, stand_in) == (["rebind.example"], [(PUBLIC, server.port)])

    # The redirect's connection looks the name up again and checks the new
    # answer, rather than trusting the first.
    url = server.url("/relative", host="rebind.example")
    error = fetch_error(url, allow_private=False, resolve=resolve)
    assert error.message == (
        "refused to fetch media from rebind.example (127.0.0.1): it is a "
        "loopback address"
    )
    assert error.detail is not None
    assert error.detail.endswith(f"reached by 1 redirect(s) from {url}")
    assert resolve.calls == ["rebind.example"] * 3
    assert stand_in == [(PUBLIC, server.port)] * 2
    assert server.paths == ["/cat.png", "/relative"]


# --- Sessions -----------------------------------------------------------------


def test_a_session_can_be_reused(server: MediaServer) -> None:
    with MediaSession(allow_private=True) as session:
        first = fetch(server.url("/cat.png"), session=session)
        second = fetch(server.url("/tone.wav"), session=session)
    assert (first.data, second.data) == (PNG, WAV)


def test_a_session_must_share_the_calls_policy() -> None:
    with MediaSession(allow_private=False) as session, pytest.raises(ValueError):
        fetch("http://127.0.0.1:9/cat.png", session=session, allow_private=True)


def test_a_session_never_uses_a_proxy(
    server: MediaServer, network: NetworkWatch
) -> None:
    with MediaSession(allow_private=True) as session:
        session.proxies = {"http": server.url("/")}
        error = fetch_error(server.url("/cat.png"), session=session)
    assert error.message == "media URLs are never fetched through a proxy"
    assert (server.paths, network.connects) == ([], [])


# --- HTTPS: the name is still verified when the address is pinned ------------


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for media.example, and its key."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "2",
            "-subj",
            "/CN=media.example",
            "-addext",
            "subjectAltName=DNS:media.example",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


@pytest.fixture
def tls_server(tls_files: tuple[Path, Path]) -> Iterator[MediaServer]:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*tls_files)
    server = MediaServer(tls=context)
    yield server
    server.close()


def test_https_to_a_pinned_address_checks_the_certificate_name(
    tls_server: MediaServer,
    tls_files: tuple[Path, Path],
    stand_in: list[tuple[str, int]],
) -> None:
    resolve = FakeResolver({"media.example": [[PUBLIC]], "other.example": [[PUBLIC]]})
    with MediaSession(resolve=resolve) as session:
        session.verify = str(tls_files[0])
        url = tls_server.url("/cat.png", host="media.example", scheme="https")
        assert fetch(url, allow_private=False, session=session).data == PNG

        wrong = tls_server.url("/cat.png", host="other.example", scheme="https")
        error = fetch_error(wrong, allow_private=False, session=session)
    assert error.message == "could not fetch media from other.example"
    assert error.detail is not None and error.detail.startswith("TLS certificate:")
    assert "other.example" in error.detail
    assert stand_in == [(PUBLIC, tls_server.port)] * 2
    assert tls_server.paths == ["/cat.png"]
