"""Image and audio inputs: the bytes of a bytea value, or an http(s) URL to fetch.

Nothing here knows about PostgreSQL or Multicorn. A text value is only ever an
``http://`` or ``https://`` URL: anything that looks like a path on the
database server's disk is refused, because the server's own files are never
read on a user's behalf.

A URL fetch is run by the database server, inside its network, for whoever
can query the table, so it is guarded against server-side request forgery:

- the host is resolved once per connection, every address it resolves to is
  checked, and the socket is opened to a checked address (see
  ``_connect_pinned``): a DNS answer that changes between check and connect
  (DNS rebinding) has nothing to slip through;
- loopback, private, link-local, unspecified, multicast, reserved and other
  non-public addresses, also inside IPv6 (``::ffff:127.0.0.1``), are refused
  unless the engine allows private URLs; cloud metadata services always are;
- redirects are followed by hand, at most ``MAX_REDIRECTS``, and every hop is
  checked like the first;
- media requests use their own session: no API key, no cookies, no proxy;
- the body is read in chunks and the download stops as soon as it passes the
  size limit; one deadline bounds the whole fetch, redirects included.
"""

from __future__ import annotations

import contextvars
import ipaddress
import re
import socket
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from http.cookiejar import DefaultCookiePolicy
from typing import Any
from urllib.parse import urljoin, urlsplit

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError

from hf_fdw.errors import HfFdwError

MAX_REDIRECTS = 3
CHUNK = 64 * 1024
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
USER_AGENT = "hf_fdw/0.1"

# The MIME types sniff_mime can name, with the words a hint shows for them.
ACCEPTED_TYPES = {
    "image/jpeg": "JPEG",
    "image/png": "PNG",
    "image/gif": "GIF",
    "image/webp": "WebP",
    "image/bmp": "BMP",
    "image/tiff": "TIFF",
    "image/avif": "AVIF",
    "image/heic": "HEIC",
    "audio/flac": "FLAC",
    "audio/wav": "WAV",
    "audio/mpeg": "MP3",
    "audio/aac": "AAC (ADTS)",
    "audio/ogg": "Ogg",
    "audio/webm": "WebM",
    "audio/x-matroska": "Matroska",
    "audio/mp4": "MP4/M4A",
    "audio/aiff": "AIFF",
}
ACCEPTED_HINT = (
    "accepted: images in "
    + ", ".join(
        name for mime, name in ACCEPTED_TYPES.items() if mime.startswith("image/")
    )
    + "; audio in "
    + ", ".join(
        name for mime, name in ACCEPTED_TYPES.items() if mime.startswith("audio/")
    )
)

ALLOW_PRIVATE_HINT = (
    "give a public URL; if the engine's owner trusts every user of the engine "
    "with the database server's own network, they can set the engine option "
    "allow_private_urls: options => '{\"allow_private_urls\": true}'"
)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# One answer of socket.getaddrinfo: (family, type, proto, canonname, sockaddr).
AddressInfo = tuple[Any, ...]
# socket.getaddrinfo, or a stand-in with its positional arguments
# (host, port, family, type).
Resolver = Callable[[str, int, int, int], Sequence[AddressInfo]]


@dataclass(frozen=True)
class Media:
    """An image or audio input, ready to send: its bytes and their MIME type.

    ``source`` describes where the bytes came from, for messages: a URL
    without its query or user name, or the size of a bytea value.
    """

    data: bytes = field(repr=False)
    mime: str
    source: str


# --- MIME sniffing ---------------------------------------------------------

_BMP_HEADER_SIZES = frozenset({12, 16, 40, 52, 56, 64, 108, 124})


def _ftyp_mime(brand: bytes) -> str:
    """The MIME type of an ISO base media file from its major brand."""
    if brand in (b"avif", b"avis"):
        return "image/avif"
    if brand in (b"heic", b"heix", b"heim", b"heis", b"mif1", b"msf1"):
        return "image/heic"
    return "audio/mp4"


def _ebml_mime(head: bytes) -> str | None:
    """WebM or Matroska, from the DocType in the EBML header."""
    if b"webm" in head:
        return "audio/webm"
    if b"matroska" in head:
        return "audio/x-matroska"
    return None


def _frame_sync_mime(head: bytes) -> str | None:
    """MP3 or ADTS AAC, from a frame header with its fields in range."""
    if len(head) < 4 or head[0] != 0xFF or head[1] & 0xE0 != 0xE0:
        return None
    layer = (head[1] >> 1) & 0b11
    if layer == 0:
        # ADTS: a 12-bit sync word, then a sampling index below 13.
        if head[1] & 0xF6 == 0xF0 and (head[2] >> 2) & 0x0F < 13:
            return "audio/aac"
        return None
    version = (head[1] >> 3) & 0b11
    bitrate = head[2] >> 4
    sample_rate = (head[2] >> 2) & 0b11
    if version == 0b01 or bitrate == 0b1111 or sample_rate == 0b11:
        return None
    return "audio/mpeg"


def sniff_mime(data: bytes) -> str | None:
    """The MIME type of image or audio bytes, from their magic bytes; or None."""
    head = bytes(data[:64])
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return "audio/wav"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "image/tiff"
    if (
        head[:2] == b"BM"
        and len(head) >= 18
        and int.from_bytes(head[14:18], "little") in _BMP_HEADER_SIZES
    ):
        return "image/bmp"
    if head[:4] == b"fLaC":
        return "audio/flac"
    if head[:4] == b"OggS":
        return "audio/ogg"
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return _ebml_mime(head)
    if head[4:8] == b"ftyp" and len(head) >= 12:
        return _ftyp_mime(head[8:12])
    if head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
        return "audio/aiff"
    if head[:3] == b"ID3":
        return "audio/mpeg"
    return _frame_sync_mime(head)


# --- Addresses --------------------------------------------------------------

_PRIVATE_NETWORKS = tuple(
    ipaddress.ip_network(network)
    for network in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7")
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")
# Never fetched, whatever the engine allows: they hand out cloud credentials.
_METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(address)
    for address in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200")
)


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries (mapped, NAT64, 6to4...)."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _NAT64 or ip in _IPV4_COMPATIBLE:
        return ipaddress.IPv4Address(int(ip) & 0xFFFF_FFFF)
    return None


def address_class(ip: IPAddress) -> str | None:
    """The kind of a non-public address ("loopback", ...); None for a public one."""
    if ip.is_unspecified:
        return "unspecified"
    if ip.is_loopback:
        return "loopback"
    if isinstance(ip, ipaddress.IPv6Address):
        inner = _embedded_ipv4(ip)
        if inner is not None:
            kind = address_class(inner)
            return None if kind is None else f"{kind} (IPv4 {inner} inside IPv6)"
    if ip.is_link_local:
        return "link-local"
    if ip.is_multicast:
        return "multicast"
    if any(ip in network for network in _PRIVATE_NETWORKS):
        return "private"
    if ip.is_reserved:
        return "reserved"
    if isinstance(ip, ipaddress.IPv6Address) and ip.is_site_local:
        return "site-local"
    if not ip.is_global:
        return "special-purpose (not publicly routable)"
    return None


def _a(kind: str) -> str:
    """``kind`` with its indefinite article."""
    return ("an " if kind[0] in "aeiou" else "a ") + kind


def _is_metadata(ip: IPAddress) -> bool:
    if ip in _METADATA_ADDRESSES:
        return True
    if isinstance(ip, ipaddress.IPv6Address):
        return _embedded_ipv4(ip) in _METADATA_ADDRESSES
    return False


@dataclass(frozen=True)
class _Guard:
    """Resolves a host and refuses it unless every address may be reached."""

    allow_private: bool
    resolve: Resolver

    def addresses(self, host: str, port: int) -> list[AddressInfo]:
        """Every address of ``host``, each one checked; raise if any is refused."""
        try:
            answers = list(self.resolve(host, port, 0, socket.SOCK_STREAM))
        except (OSError, UnicodeError) as exc:
            raise HfFdwError(
                f"could not resolve media host {host}",
                detail=str(exc),
                hint="check the URL's host name; the database server must be "
                "able to resolve it",
            ) from None
        answers = [
            answer
            for answer in answers
            if answer[0] in (socket.AF_INET, socket.AF_INET6)
        ]
        if not answers:
            raise HfFdwError(
                f"media host {host} has no IPv4 or IPv6 address",
                hint="check the URL's host name",
            )
        for answer in answers:
            self.check(host, str(answer[4][0]))
        return answers

    def check(self, host: str, address: str) -> None:
        """Raise unless ``address``, an address of ``host``, may be reached."""
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            raise HfFdwError(
                f"media host {host} resolves to {address!r}, not an IP address"
            ) from None
        where = host if host == str(ip) else f"{host} ({ip})"
        if _is_metadata(ip):
            raise HfFdwError(
                f"refused to fetch media from {where}: it is a cloud metadata "
                "service address",
                detail="metadata services hand out the database server's credentials",
                hint="this address is never fetched, whatever the engine's options",
            )
        kind = address_class(ip)
        if kind is not None and not self.allow_private:
            raise HfFdwError(
                f"refused to fetch media from {where}: it is {_a(kind)} address",
                detail="media URLs are fetched by the database server, so only "
                "public addresses are reached unless the engine allows more",
                hint=ALLOW_PRIVATE_HINT,
            )


# --- Connections pinned to checked addresses --------------------------------


class _Deadline:
    """The time left for one fetch; when it runs out, its sockets are cut.

    A read timeout bounds each wait for data, not a whole download: a server
    that sends a byte every second would never trip it. So a timer shuts
    down every socket the fetch opened (through a duplicate of each socket's
    file descriptor, which still works once TLS has taken the socket over),
    and the blocked read ends at once.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.ends = time.monotonic() + seconds
        self.expired = False
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._timer = threading.Timer(seconds, self._cut)
        self._timer.daemon = True

    def start(self) -> None:
        self._timer.start()

    def remaining(self) -> float:
        left = self.ends - time.monotonic()
        if left <= 0:
            self.expired = True
        return left

    def watch(self, sock: socket.socket) -> None:
        """Cut ``sock`` too when the time runs out."""
        with self._lock:
            duplicate = sock.dup()
            self._sockets.append(duplicate)
            if self.expired:
                self._shut(duplicate)

    def close(self) -> None:
        self._timer.cancel()
        with self._lock:
            for sock in self._sockets:
                sock.close()
            self._sockets.clear()

    def _cut(self) -> None:
        with self._lock:
            self.expired = True
            for sock in self._sockets:
                self._shut(sock)

    @staticmethod
    def _shut(sock: socket.socket) -> None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


_DEADLINE: contextvars.ContextVar[_Deadline | None] = contextvars.ContextVar(
    "hf_fdw_media_deadline", default=None
)


def _dial(
    family: int,
    kind: int,
    proto: int,
    sockaddr: tuple[Any, ...],
    timeout: float | None,
    source_address: tuple[str, int] | None,
    socket_options: Sequence[tuple[int, int, Any]] | None,
) -> socket.socket:
    """Open a TCP connection to one already checked address."""
    sock = socket.socket(family, kind, proto)
    try:
        for option in socket_options or ():
            sock.setsockopt(*option)
        sock.settimeout(timeout)
        if source_address:
            sock.bind(source_address)
        sock.connect(sockaddr)
    except BaseException:
        sock.close()
        raise
    return sock


def _connect_pinned(connection: HTTPConnection, guard: _Guard) -> socket.socket:
    """Resolve the connection's host once, check it, and connect to what was checked.

    This replaces urllib3's own connect, which would resolve the name again.
    Only the TCP connection goes to the pinned address: TLS still sends and
    verifies the host name, so HTTPS certificates are checked as usual.
    """
    host = connection.host.strip("[]")
    default_port = 443 if isinstance(connection, HTTPSConnection) else 80
    port = connection.port or default_port
    answers = guard.addresses(host, port)

    timeout = connection.timeout
    if not isinstance(timeout, (int, float)):
        timeout = None
    failure: OSError | None = None
    for family, kind, proto, _, sockaddr in answers:
        try:
            sock = _dial(
                family,
                kind,
                proto,
                sockaddr,
                timeout,
                connection.source_address,
                connection.socket_options,
            )
        except OSError as exc:
            failure = exc
            continue
        deadline = _DEADLINE.get()
        if deadline is not None:
            deadline.watch(sock)
        sys.audit("http.client.connect", connection, connection.host, port)
        return sock

    if isinstance(failure, TimeoutError):
        raise ConnectTimeoutError(
            connection, f"connection to {host} timed out"
        ) from failure
    raise NewConnectionError(
        connection, f"could not connect to {host}: {failure}"
    ) from failure


def _pool_classes(guard: _Guard) -> dict[str, type[HTTPConnectionPool]]:
    """Connection pools whose connections go only to addresses ``guard`` checked."""

    class PinnedHTTPConnection(HTTPConnection):
        def _new_conn(self) -> socket.socket:
            return _connect_pinned(self, guard)

    class PinnedHTTPSConnection(HTTPSConnection):
        def _new_conn(self) -> socket.socket:
            return _connect_pinned(self, guard)

    class PinnedHTTPConnectionPool(HTTPConnectionPool):
        ConnectionCls = PinnedHTTPConnection

    class PinnedHTTPSConnectionPool(HTTPSConnectionPool):
        ConnectionCls = PinnedHTTPSConnection

    return {"http": PinnedHTTPConnectionPool, "https": PinnedHTTPSConnectionPool}


class _PinnedAdapter(HTTPAdapter):
    """A requests adapter whose connections are pinned and never proxied."""

    def __init__(self, guard: _Guard) -> None:
        self._guard = guard
        super().__init__(max_retries=0)

    def init_poolmanager(
        self, connections: int, maxsize: int, block: bool = False, **pool_kwargs: Any
    ) -> None:
        super().init_poolmanager(connections, maxsize, block, **pool_kwargs)
        self.poolmanager.pool_classes_by_scheme = _pool_classes(self._guard)

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        # Through a proxy, the address checks would judge the proxy, not the
        # media host: refuse rather than fetch unchecked.
        raise HfFdwError(
            "media URLs are never fetched through a proxy",
            hint="the database server must reach media hosts directly",
        )


class MediaSession(requests.Session):
    """A session for media downloads only: pinned addresses, no credentials.

    It never carries the inference API key, keeps no cookies, reads no proxy
    or ``.netrc`` settings from the environment, asks for uncompressed bodies
    and closes each connection after its response, so that every connection
    is made, and checked, by the fetch that uses it. The address policy
    (``allow_private``, ``resolve``) is fixed for the session's life.
    """

    def __init__(
        self,
        *,
        allow_private: bool = False,
        resolve: Resolver = socket.getaddrinfo,
    ) -> None:
        super().__init__()
        self.allow_private = allow_private
        self.trust_env = False
        self.headers.update(
            {
                "User-Agent": USER_AGENT,
                "Accept": "image/*, audio/*;q=0.9, */*;q=0.1",
                "Accept-Encoding": "identity",
                "Connection": "close",
            }
        )
        self.cookies.set_policy(DefaultCookiePolicy(allowed_domains=[]))
        adapter = _PinnedAdapter(_Guard(allow_private, resolve))
        self.mount("http://", adapter)
        self.mount("https://", adapter)


# --- URLs and paths ---------------------------------------------------------

_DRIVE = re.compile(r"[A-Za-z]:([\\/]|$)")
_BYTEA_HEX = re.compile(r"\\x(?:[0-9A-Fa-f]{2})+")
_MEDIA_FILE_NAME = re.compile(
    r"[^/\\:]+\.(?:jpe?g|png|gif|webp|bmp|tiff?|avif|heic|wav|flac|mp3|ogg|oga|"
    r"opus|webm|mka|m4a|mp4|aac|aiff?)",
    re.IGNORECASE,
)
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*):")
_MIME_TOKEN = re.compile(r"(?:image|audio)/[a-z0-9][a-z0-9.+-]*")


def _short(text: str, limit: int = 60) -> str:
    """A value quoted for a message, cut to ``limit`` characters."""
    if len(text) > limit:
        text = text[:limit] + "..."
    return repr(text)


def _describe(url: str) -> str:
    """The URL for messages: no user name or password, the query elided."""
    parts = urlsplit(url)
    netloc = parts.netloc.rpartition("@")[2]
    path = parts.path or "/"
    if len(path) > 80:
        path = path[:80] + "..."
    query = "?..." if parts.query else ""
    return f"{parts.scheme.lower()}://{netloc}{path}{query}"


def _looks_like_path(text: str) -> bool:
    """True for what names a file rather than a URL: /x, ./x, ~/x, C:\\x, x.jpg."""
    if text.startswith(("/", "~", "\\", "./", "../", ".\\", "..\\")):
        return True
    if text in (".", "..") or _DRIVE.match(text):
        return True
    if _SCHEME.match(text):
        return text.lower().startswith("file:")
    return "/" in text or "\\" in text or bool(_MEDIA_FILE_NAME.fullmatch(text))


def _path_error(text: str) -> HfFdwError:
    return HfFdwError(
        f"media input {_short(text)} looks like a file path: paths on the "
        "database server are never read",
        detail="a text media input must be an http:// or https:// URL; "
        "hf_fdw does not open the database server's files for its users",
        hint="load the file's bytes into a bytea column from the client, or "
        "serve the file over http(s) and give its URL",
    )


def check_url(text: str) -> str:
    """Return ``text`` as an http(s) URL to fetch, or raise saying why not."""
    text = text.strip()
    if not text:
        raise HfFdwError(
            "media input is an empty string",
            hint="give an http:// or https:// URL, or the bytes in a bytea column",
        )
    if _BYTEA_HEX.fullmatch(text):
        raise HfFdwError(
            "media input is bytea text output (\\x...), not a URL",
            hint="declare the input column bytea, so the bytes arrive as bytes",
        )
    if _looks_like_path(text):
        raise _path_error(text)

    scheme_match = _SCHEME.match(text)
    if scheme_match is None:
        raise HfFdwError(
            f"media input {_short(text)} is not a URL",
            hint="give an absolute URL that starts with http:// or https://, "
            "or the bytes in a bytea column",
        )
    scheme = scheme_match.group(1).lower()
    if scheme not in ("http", "https"):
        raise HfFdwError(
            f"media URL scheme {scheme!r} is not supported",
            hint="only http:// and https:// URLs are fetched; for anything "
            "else, store the bytes in a bytea column",
        )
    parts = urlsplit(text)
    if any(char.isspace() or ord(char) < 32 or ord(char) == 127 for char in text):
        raise HfFdwError(
            f"media URL {_short(_describe(text), 100)} contains spaces or control "
            "characters",
            hint="percent-encode them (a space is %20)",
        )
    if parts.username is not None or parts.password is not None:
        raise HfFdwError(
            "media URLs with a user name or password are not fetched",
            detail=f"the URL, without them: {_describe(text)}",
            hint="use a public or pre-signed URL, or store the bytes in a bytea column",
        )
    if not parts.hostname:
        raise HfFdwError(
            f"media URL {_describe(text)} has no host",
            hint="write it as http(s)://host/path",
        )
    if "%" in parts.hostname:
        raise HfFdwError(
            f"media URL {_describe(text)} names an IPv6 zone",
            hint="give a public host name or address",
        )
    try:
        _ = parts.port
    except ValueError:
        raise HfFdwError(
            f"media URL {_describe(text)} has a port that is not a number from 0 "
            "to 65535"
        ) from None
    return text


# --- Fetching ---------------------------------------------------------------


def _why(exc: BaseException) -> str:
    """The most telling reason inside a requests or urllib3 error, URL-free."""
    seen: set[int] = set()
    pending: list[BaseException] = [exc]
    while pending:
        current = pending.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        verify_message = getattr(current, "verify_message", None)
        if verify_message:
            return f"TLS certificate: {verify_message}"
        if type(current).__name__ == "CertificateError":
            # urllib3 1.26 checks the host name itself, with its own error.
            return f"TLS certificate: {current}"
        if isinstance(current, OSError) and current.strerror:
            return current.strerror
        linked = [
            current.__cause__,
            current.__context__,
            getattr(current, "reason", None),
        ]
        linked += [arg for arg in current.args if isinstance(arg, BaseException)]
        pending += [link for link in linked if isinstance(link, BaseException)]
    return type(exc).__name__


def _timeout_error(host: str, deadline: _Deadline) -> HfFdwError:
    return HfFdwError(
        f"media download from {host} did not finish within {deadline.seconds:g} s",
        hint="check that the URL is reachable from the database server and the "
        "file is not too large; the engine's timeout bounds the whole download",
    )


def _status_hint(status: int) -> str | None:
    if status in (404, 410):
        return "check the URL: it must point at the image or audio file itself"
    if status in (401, 403):
        return (
            "the URL must be readable without credentials: use a public or "
            "pre-signed URL, or store the bytes in a bytea column"
        )
    if status == 429 or status >= 500:
        return "the media host is busy or failing; try again later"
    if status in REDIRECT_STATUSES:
        return "the redirect has no Location; check the URL"
    return None


def _too_large(host: str, max_bytes: int, detail: str) -> HfFdwError:
    return HfFdwError(
        f"media from {host} is larger than the limit of {max_bytes} bytes",
        detail=detail,
        hint="use a smaller or more compressed file",
    )


def _via(error: HfFdwError, source: str, hops: int) -> HfFdwError:
    """``error`` with a note that a redirect from ``source`` led there."""
    note = f"reached by {hops} redirect(s) from {source}"
    detail = f"{error.detail}; {note}" if error.detail else note
    return HfFdwError(error.message, detail=detail, hint=error.hint)


def _get(session: MediaSession, url: str, deadline: _Deadline) -> requests.Response:
    """One GET, redirects not followed, within what is left of the deadline."""
    host = urlsplit(url).hostname or "?"
    if not isinstance(session.get_adapter(url), _PinnedAdapter):
        raise TypeError("the media session's adapters were replaced")
    remaining = deadline.remaining()
    if remaining <= 0:
        raise _timeout_error(host, deadline)
    try:
        return session.get(
            url,
            stream=True,
            allow_redirects=False,
            timeout=(min(remaining, deadline.seconds), remaining),
        )
    except requests.Timeout:
        raise _timeout_error(host, deadline) from None
    except requests.RequestException as exc:
        if deadline.expired:
            raise _timeout_error(host, deadline) from None
        raise HfFdwError(
            f"could not fetch media from {host}",
            detail=_why(exc),
            hint="check that the URL is right and reachable from the database server",
        ) from None


def _read_body(
    response: requests.Response, host: str, max_bytes: int, deadline: _Deadline
) -> bytes:
    """The body, read in chunks; stop as soon as it passes ``max_bytes``."""
    encoding = response.headers.get("Content-Encoding", "").strip().lower()
    if encoding not in ("", "identity"):
        raise HfFdwError(
            f"media host {host} sent the file compressed ({encoding})",
            hint="serve the file as it is, without Content-Encoding",
        )
    declared = response.headers.get("Content-Length", "").strip()
    if declared.isdigit() and int(declared) > max_bytes:
        raise _too_large(host, max_bytes, f"the server announced {declared} bytes")

    chunks: list[bytes] = []
    total = 0
    try:
        for chunk in response.raw.stream(CHUNK, decode_content=False):
            total += len(chunk)
            if total > max_bytes:
                raise _too_large(
                    host, max_bytes, f"the download was stopped after {total} bytes"
                )
            if deadline.remaining() <= 0:
                raise _timeout_error(host, deadline)
            chunks.append(chunk)
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        if deadline.expired or isinstance(
            exc, (urllib3.exceptions.ReadTimeoutError, TimeoutError)
        ):
            raise _timeout_error(host, deadline) from None
        raise HfFdwError(
            f"media download from {host} was cut short", detail=_why(exc)
        ) from None
    if deadline.expired:
        # A cut socket looks like the end of a body sent without a length.
        raise _timeout_error(host, deadline)
    return b"".join(chunks)


def _download(
    url: str, session: MediaSession, max_bytes: int, deadline: _Deadline
) -> tuple[bytes, str]:
    """The body at ``url`` and its Content-Type, redirects followed and checked."""
    source = _describe(url)
    hops = 0
    while True:
        host = urlsplit(url).hostname or "?"
        try:
            response = _get(session, url, deadline)
        except HfFdwError as error:
            raise error if hops == 0 else _via(error, source, hops) from None
        with response:
            status = response.status_code
            location = response.headers.get("Location")
            if status in REDIRECT_STATUSES and location:
                if hops == MAX_REDIRECTS:
                    raise HfFdwError(
                        f"media URL {source} redirects more than {MAX_REDIRECTS} times",
                        hint="give the file's final URL",
                    )
                hops += 1
                try:
                    url = check_url(urljoin(url, location))
                except HfFdwError as error:
                    raise _via(error, source, hops) from None
                continue
            if status != 200:
                detail = f"fetching {source}"
                if hops:
                    detail += f", after {hops} redirect(s)"
                raise HfFdwError(
                    f"media host {host} answered HTTP {status}",
                    detail=detail,
                    hint=_status_hint(status),
                )
            data = _read_body(response, host, max_bytes, deadline)
            return data, response.headers.get("Content-Type", "")


def _unknown_type(source: str, detail: str) -> HfFdwError:
    return HfFdwError(
        f"unknown media type in {source}", detail=detail, hint=ACCEPTED_HINT
    )


def _bytes_as_text(data: bytes) -> str | None:
    """A URL or a path written into a bytea value ('https://...'::bytea), or
    None: such a value is fetched, or refused with its reason, as text."""
    if len(data) > 4096 or sniff_mime(data) is not None:
        return None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if not text.isprintable() or not (_SCHEME.match(text) or _looks_like_path(text)):
        return None
    return text


def _media_from_bytes(value: bytes | bytearray | memoryview, max_bytes: int) -> Media:
    size = value.nbytes if isinstance(value, memoryview) else len(value)
    source = f"a bytea value of {size} bytes"
    if size == 0:
        raise HfFdwError(
            "media input is an empty bytea value",
            hint="store the whole file's bytes in the column",
        )
    if size > max_bytes:
        raise HfFdwError(
            f"media input is {size} bytes, over the limit of {max_bytes} bytes",
            hint="use a smaller or more compressed file",
        )
    data = bytes(value)
    mime = sniff_mime(data)
    if mime is None:
        raise _unknown_type(
            source,
            f"the bytes start with {data[:8].hex(' ')}, which is no known image "
            "or audio format",
        )
    return Media(data, mime, source)


def _media_from_url(
    text: str,
    allow_private: bool,
    max_bytes: int,
    timeout: float,
    session: MediaSession | None,
    resolve: Resolver | None,
) -> Media:
    url = check_url(text)
    source = _describe(url)
    own = session is None
    if session is None:
        session = MediaSession(
            allow_private=allow_private, resolve=resolve or socket.getaddrinfo
        )
    elif session.allow_private != allow_private:
        raise ValueError("the session's allow_private differs from the call's")
    elif resolve is not None:
        raise ValueError("give resolve to MediaSession, not with a session")

    deadline = _Deadline(timeout)
    token = _DEADLINE.set(deadline)
    deadline.start()
    try:
        data, content_type = _download(url, session, max_bytes, deadline)
    finally:
        _DEADLINE.reset(token)
        deadline.close()
        if own:
            session.close()

    if not data:
        raise HfFdwError(
            f"media URL {source} gave an empty body",
            hint="check the URL: it must point at the image or audio file itself",
        )
    mime = sniff_mime(data)
    if mime is None:
        declared = content_type.split(";", 1)[0].strip().lower()
        if not _MIME_TOKEN.fullmatch(declared):
            raise _unknown_type(
                source,
                "the bytes are no known image or audio format, and the server "
                f"calls them {declared or 'nothing'!r}",
            )
        mime = declared
    return Media(data, mime, source)


def media_from_value(
    value: object,
    *,
    allow_private: bool,
    max_bytes: int,
    timeout: float,
    session: MediaSession | None = None,
    resolve: Resolver | None = None,
) -> Media:
    """The media a column value stands for: bytea bytes, or the file at a URL.

    ``max_bytes`` bounds the size; ``timeout`` (seconds) bounds the whole
    download, connecting, redirects and reading included. ``session`` lets a
    caller reuse one MediaSession (its allow_private must match); ``resolve``
    replaces socket.getaddrinfo, for tests. Raise HfFdwError saying the fix.
    """
    if max_bytes < 1 or timeout <= 0:
        raise ValueError("max_bytes and timeout must be positive")
    if isinstance(value, (bytes, bytearray, memoryview)):
        text = _bytes_as_text(bytes(value))
        if text is None:
            return _media_from_bytes(value, max_bytes)
        value = text  # 'https://...'::bytea, or a path: read as the text it is
    if isinstance(value, str):
        return _media_from_url(
            value, allow_private, max_bytes, timeout, session, resolve
        )
    kind = "NULL" if value is None else type(value).__name__
    raise HfFdwError(
        f"media input must be bytea or text, not {kind}",
        hint="declare the input column bytea (the file's bytes) or text (an "
        "http(s) URL)",
    )
