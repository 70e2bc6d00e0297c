"""The Python codec mirrors guest/agent/proto.h and rejects what the protocol forbids."""

import re
from pathlib import Path

import pytest

from hypernetes.runtime import guestproto as gp

PROTO_H = Path(__file__).parent.parent / "guest" / "agent" / "proto.h"


def test_constants_match_proto_h() -> None:
    defines = dict(re.findall(r"^#define ((?:PROTO|MSG|TAG)_\w+) (\S+)", PROTO_H.read_text(), re.M))
    assert len(defines) > 40
    for name, value in defines.items():
        expected: object = value.strip('"') if value.startswith('"') else int(value)
        assert getattr(gp, name) == expected, name


def test_roundtrip_frame_and_tlv() -> None:
    tlv = gp.TLV().add_u32(gp.TAG_VERSION, 1).add_str(gp.TAG_AGENT, "hn-agent").add_u64(gp.TAG_TIME_NS, 2**40)
    frame = gp.encode_frame(gp.MSG_READY, 7, tlv.encode())
    frames = list(gp.FrameDecoder().feed(frame))
    assert frames == [gp.Frame(gp.MSG_READY, 7, tlv.encode())]
    decoded = gp.TLV.decode(frames[0].payload)
    assert decoded.u32(gp.TAG_VERSION) == 1
    assert decoded.string(gp.TAG_AGENT) == "hn-agent"
    assert decoded.u64(gp.TAG_TIME_NS) == 2**40


def test_split_feed() -> None:
    data = gp.encode_frame(gp.MSG_STDOUT, 1, b"hello") * 3
    decoder = gp.FrameDecoder()
    out = [f for b in data for f in decoder.feed(bytes([b]))]
    assert [f.payload for f in out] == [b"hello"] * 3


@pytest.mark.parametrize(
    "header, message",
    [
        (gp._HEADER.pack(gp.PROTO_MAX_PAYLOAD + 1, gp.MSG_ACK, 0, 1), "exceeds"),
        (gp._HEADER.pack(gp.PROTO_MAX_CHUNK + 1, gp.MSG_STDOUT, 0, 1), "exceeds"),
        (gp._HEADER.pack(0, gp.MSG_HELLO, 0, 1), "unknown message type"),
        (gp._HEADER.pack(0, 999, 0, 1), "unknown message type"),
        (gp._HEADER.pack(0, gp.MSG_ACK, 1, 1), "flags"),
    ],
)
def test_hostile_headers_rejected(header: bytes, message: str) -> None:
    with pytest.raises(gp.ProtocolError, match=message):
        list(gp.FrameDecoder().feed(header))


def test_hostile_tlv_rejected() -> None:
    with pytest.raises(gp.ProtocolError, match="overruns"):
        gp.TLV.decode(gp._TLV.pack(1, 100) + b"x")
    with pytest.raises(gp.ProtocolError, match="truncated"):
        gp.TLV.decode(b"\x00\x01\x00")
    with pytest.raises(gp.ProtocolError, match="u32"):
        gp.TLV.decode(gp._TLV.pack(1, 2) + b"xx").u32(1)


def test_guest_strings_are_sanitized_and_bounded() -> None:
    tlv = gp.TLV.decode(gp.TLV().add(gp.TAG_MESSAGE, b"\x1b[2Jboom\xff" + b"a" * 10).encode())
    text = tlv.string(gp.TAG_MESSAGE, limit=8)
    assert text is not None and "\x1b" not in text and len(text) <= 8
