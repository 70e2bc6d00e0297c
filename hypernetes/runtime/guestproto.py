"""Host side of the guest protocol: frame and TLV codec, mirrored from guest/agent/proto.h.

Everything decoded here came from a guest the tenant owns: decoders bound every size, reject
malformed input with `ProtocolError` and never allocate more than a frame's declared length,
which itself is bounded before anything is read.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

PROTO_VERSION = 1
PROTO_PORT_NAME = "hn.agent"
PROTO_HEADER_SIZE = 12
PROTO_MAX_PAYLOAD = 1048576
PROTO_MAX_CHUNK = 32768
PROTO_STDIN_WINDOW = 65536

# guest -> host
MSG_READY = 1
MSG_ACK = 2
MSG_ERROR = 3
MSG_STDOUT = 4
MSG_STDERR = 5
MSG_EXIT = 6
MSG_WINDOW = 7
MSG_LOG = 8
# host -> guest
MSG_HELLO = 32
MSG_SETUP = 33
MSG_CREATE = 34
MSG_EXEC = 35
MSG_SIGNAL = 36
MSG_RESIZE = 37
MSG_STDIN = 38
MSG_REMOVE = 39
MSG_SHUTDOWN = 40
MSG_PING = 41
MSG_PROBE = 42
MSG_WRITE_FILES = 43
MSG_GROW_FS = 44  # SOURCE (disk serial), SIZE_LIMIT (its new size): grow its mounted ext4, online

TAG_VERSION = 1
TAG_AGENT = 2
TAG_PID = 3
TAG_ERRNO = 4
TAG_MESSAGE = 5
TAG_EXIT_CODE = 6
TAG_EXIT_SIGNAL = 7
TAG_BYTES = 8
TAG_HOSTNAME = 16
TAG_TIME_NS = 17
TAG_RANDOM_SEED = 18
TAG_DNS_SERVER = 19
TAG_DNS_SEARCH = 20
TAG_HOSTS_LINE = 21
TAG_IFACE = 22
TAG_MAC = 23
TAG_ADDRESS = 24
TAG_MTU = 25
TAG_ROUTE = 26
TAG_DEST = 27
TAG_GATEWAY = 28
TAG_DNS_OPTION = 29
TAG_CONTAINER_ID = 32
TAG_IMAGE_DISK = 33
TAG_PROCESS = 34
TAG_MEMORY_LIMIT = 35
TAG_MOUNT = 36
TAG_SOURCE = 37
TAG_TARGET = 38
TAG_READONLY = 39
TAG_FSTYPE = 40
TAG_PROCESS_ID = 48
TAG_ARG = 49
TAG_ENV = 50
TAG_CWD = 51
TAG_UID = 52
TAG_GID = 53
TAG_GROUP = 54
TAG_TERMINAL = 55
TAG_STDIN = 56
TAG_ROWS = 57
TAG_COLS = 58
TAG_SIGNAL = 59
TAG_GRACE_MS = 60
TAG_SUBPATH = 61
TAG_SIZE_LIMIT = 62
TAG_FSGROUP = 63
TAG_PROBE_KIND = 64
TAG_PORT = 65
TAG_HOST = 66
TAG_PATH = 67
TAG_TIMEOUT_MS = 68
TAG_HEADER = 69
TAG_STATUS_CODE = 70
TAG_DISK = 71
TAG_PARTITION = 72
TAG_DEVICE = 73
TAG_FILE = 74
TAG_DATA = 75
TAG_MODE = 76
TAG_RESTORED = 77

GUEST_MESSAGES = frozenset(
    {MSG_READY, MSG_ACK, MSG_ERROR, MSG_STDOUT, MSG_STDERR, MSG_EXIT, MSG_WINDOW, MSG_LOG}
)
STREAM_MESSAGES = frozenset({MSG_STDOUT, MSG_STDERR, MSG_STDIN, MSG_LOG})

_HEADER = struct.Struct(">IHHI")
_TLV = struct.Struct(">HI")
MAX_STRING = 65536  # no single string field the host accepts from a guest is longer
MAX_FIELDS = 4096  # TLV fields per payload


class ProtocolError(Exception):
    """The peer sent something the protocol does not allow; the channel must be dropped."""


@dataclass(frozen=True)
class Header:
    length: int
    type: int
    flags: int
    id: int


@dataclass(frozen=True)
class Frame:
    type: int
    id: int
    payload: bytes = b""


def decode_header(data: bytes) -> Header:
    """Decode and bound a 12-byte header from the guest."""
    if len(data) != PROTO_HEADER_SIZE:
        raise ProtocolError(f"short header: {len(data)} bytes")
    length, mtype, flags, ident = _HEADER.unpack(data)
    if flags != 0:
        raise ProtocolError(f"non-zero flags {flags:#x}")
    if mtype not in GUEST_MESSAGES:
        raise ProtocolError(f"unknown message type {mtype}")
    limit = PROTO_MAX_CHUNK if mtype in STREAM_MESSAGES else PROTO_MAX_PAYLOAD
    if length > limit:
        raise ProtocolError(f"frame of {length} bytes exceeds {limit} for type {mtype}")
    return Header(length, mtype, flags, ident)


def encode_frame(mtype: int, ident: int, payload: bytes = b"") -> bytes:
    if len(payload) > PROTO_MAX_PAYLOAD:
        raise ValueError(f"payload of {len(payload)} bytes exceeds {PROTO_MAX_PAYLOAD}")
    return _HEADER.pack(len(payload), mtype, 0, ident) + payload


class FrameDecoder:
    """Incremental decoder for a byte stream from the guest (used by fuzz tests and the client).

    Buffers at most one header plus one bounded payload.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self._header: Header | None = None

    def feed(self, data: bytes) -> Iterator[Frame]:
        self._buf += data
        while True:
            if self._header is None:
                if len(self._buf) < PROTO_HEADER_SIZE:
                    return
                self._header = decode_header(bytes(self._buf[:PROTO_HEADER_SIZE]))
                del self._buf[:PROTO_HEADER_SIZE]
            if len(self._buf) < self._header.length:
                return
            payload = bytes(self._buf[: self._header.length])
            del self._buf[: self._header.length]
            header, self._header = self._header, None
            yield Frame(header.type, header.id, payload)


# --- TLV -----------------------------------------------------------------------------------------


@dataclass
class TLV:
    """An ordered list of (tag, raw value) pairs with typed accessors that validate."""

    fields: list[tuple[int, bytes]] = field(default_factory=list)

    @classmethod
    def decode(cls, payload: bytes) -> TLV:
        fields: list[tuple[int, bytes]] = []
        pos, end = 0, len(payload)
        while pos < end:
            if end - pos < _TLV.size:
                raise ProtocolError("truncated TLV header")
            tag, length = _TLV.unpack_from(payload, pos)
            pos += _TLV.size
            if length > end - pos:
                raise ProtocolError(f"TLV tag {tag} length {length} overruns payload")
            fields.append((tag, payload[pos : pos + length]))
            pos += length
            if len(fields) > MAX_FIELDS:
                raise ProtocolError("too many TLV fields")
        return cls(fields)

    def all(self, tag: int) -> list[bytes]:
        return [v for t, v in self.fields if t == tag]

    def raw(self, tag: int) -> bytes | None:
        values = self.all(tag)
        return values[-1] if values else None

    def u32(self, tag: int) -> int | None:
        value = self.raw(tag)
        if value is None:
            return None
        if len(value) != 4:
            raise ProtocolError(f"tag {tag}: expected u32, got {len(value)} bytes")
        return int.from_bytes(value, "big")

    def u64(self, tag: int) -> int | None:
        value = self.raw(tag)
        if value is None:
            return None
        if len(value) != 8:
            raise ProtocolError(f"tag {tag}: expected u64, got {len(value)} bytes")
        return int.from_bytes(value, "big")

    def string(self, tag: int, limit: int = MAX_STRING) -> str | None:
        value = self.raw(tag)
        if value is None:
            return None
        if len(value) > limit:
            value = value[:limit]
        # Guest text is shown to people and written to logs: never let it carry control bytes
        # that could rewrite a terminal, and never fail on bad UTF-8.
        text = value.decode("utf-8", errors="replace")
        return "".join(c if c.isprintable() or c in "\t" else "\ufffd" for c in text)

    # --- encoding (host -> guest) --------------------------------------------------------------

    def add(self, tag: int, value: bytes) -> TLV:
        self.fields.append((tag, value))
        return self

    def add_u32(self, tag: int, value: int) -> TLV:
        return self.add(tag, value.to_bytes(4, "big"))

    def add_u64(self, tag: int, value: int) -> TLV:
        return self.add(tag, value.to_bytes(8, "big"))

    def add_bool(self, tag: int, value: bool) -> TLV:
        return self.add(tag, b"\x01" if value else b"\x00")

    def add_str(self, tag: int, value: str) -> TLV:
        data = value.encode()
        if b"\x00" in data:
            raise ValueError(f"tag {tag}: NUL byte in string")
        return self.add(tag, data)

    def add_strs(self, tag: int, values: Iterable[str]) -> TLV:
        for v in values:
            self.add_str(tag, v)
        return self

    def add_tlv(self, tag: int, value: TLV) -> TLV:
        return self.add(tag, value.encode())

    def encode(self) -> bytes:
        return b"".join(_TLV.pack(t, len(v)) + v for t, v in self.fields)


# --- PROBE -----------------------------------------------------------------------------------------

PROBE_TCP = "tcp"
PROBE_HTTP = "http"


def probe_status_code(reply: TLV) -> int:
    """The STATUS_CODE of an http PROBE's ACK, bounded to what an HTTP status line can carry."""
    code = reply.u32(TAG_STATUS_CODE)
    if code is None or not 100 <= code <= 999:
        raise ProtocolError(f"http PROBE answered with status code {code}")
    return code
