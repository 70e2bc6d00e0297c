"""Fuzz the host-side decoder: whatever a guest sends, it either decodes or raises ProtocolError."""

import contextlib

from hypothesis import given, settings
from hypothesis import strategies as st

from hypernetes.runtime import guestproto as gp

guest_types = st.sampled_from([*sorted(gp.GUEST_MESSAGES), 0, 32, 65535])


@st.composite
def frames(draw: st.DrawFn) -> bytes:
    """Mostly well-formed frames with TLV payloads, some with lying lengths or flags."""
    fields = draw(st.lists(st.tuples(st.integers(0, 70), st.binary(max_size=40)), max_size=8))
    payload = b"".join(gp._TLV.pack(t, len(v)) + v for t, v in fields)
    payload = draw(st.one_of(st.just(payload), st.binary(max_size=64)))
    length = draw(st.one_of(st.just(len(payload)), st.integers(0, 2**32 - 1)))
    flags = draw(st.sampled_from([0, 0, 0, 1]))
    return gp._HEADER.pack(length, draw(guest_types), flags, draw(st.integers(0, 2**32 - 1))) + payload


def _consume(stream: bytes, chunk: int) -> None:
    decoder = gp.FrameDecoder()
    try:
        for i in range(0, len(stream), chunk):
            for frame in decoder.feed(stream[i : i + chunk]):
                if frame.type in gp.STREAM_MESSAGES:
                    assert len(frame.payload) <= gp.PROTO_MAX_CHUNK
                    continue
                tlv = gp.TLV.decode(frame.payload)
                for tag in range(0, 70):
                    for getter in (tlv.u32, tlv.u64, tlv.string):
                        with contextlib.suppress(gp.ProtocolError):
                            getter(tag)
        assert len(decoder._buf) <= gp.PROTO_MAX_PAYLOAD + gp.PROTO_HEADER_SIZE + chunk
    except gp.ProtocolError:
        pass


@settings(max_examples=1500, deadline=None)
@given(st.lists(frames(), max_size=6), st.integers(1, 64))
def test_structured_streams(parts: list[bytes], chunk: int) -> None:
    _consume(b"".join(parts), chunk)


@settings(max_examples=1500, deadline=None)
@given(st.binary(max_size=512), st.integers(1, 64))
def test_random_bytes(data: bytes, chunk: int) -> None:
    _consume(data, chunk)
