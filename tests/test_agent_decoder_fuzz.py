"""Fuzz the guest agent's decoders (guest/agent/fuzz_decode.c, built with ASan + UBSan).

Hypothesis generates batches of structured requests (every message type, nested PROCESS, MOUNT,
IFACE and ROUTE, values at and past the limits), mutated and lying frames, and random bytes.
Each batch goes to one harness process as u32-BE-length-prefixed inputs; the harness runs the
frame splitter, the TLV walker and every request parser on each, and must exit 0 without a
sanitizer report.
"""

from __future__ import annotations

import struct
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hypernetes.runtime import guestproto as gp

REPO = Path(__file__).resolve().parent.parent
HARNESS = REPO / "guest" / "build" / "fuzz-decode"
SANITIZER_MARKS = ("ERROR: AddressSanitizer", "runtime error:", "ERROR: LeakSanitizer", "SUMMARY:")


@pytest.fixture(scope="module")
def harness() -> Path:
    """Build the harness with make (cheap when up to date); a build failure fails the tests."""
    proc = subprocess.run(
        ["make", "-s", "-C", str(REPO / "guest"), "build/fuzz-decode"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if proc.returncode != 0 or not HARNESS.exists():
        pytest.fail(f"cannot build {HARNESS}:\n{proc.stdout}\n{proc.stderr}")
    return HARNESS


def run_harness(harness: Path, inputs: list[bytes]) -> str:
    stream = b"".join(struct.pack(">I", len(i)) + i for i in inputs)
    proc = subprocess.run([str(harness)], input=stream, capture_output=True, timeout=300)
    err = proc.stderr.decode(errors="replace")
    assert proc.returncode == 0, f"harness exited {proc.returncode}:\n{err[-4000:]}"
    assert not any(mark in err for mark in SANITIZER_MARKS), err[-4000:]
    out = proc.stdout.decode()
    assert f"{len(inputs)} inputs" in out, out
    return out


# -- strategies ---------------------------------------------------------------------------------


def tlv(tag: int, value: bytes) -> bytes:
    return struct.pack(">HI", tag, len(value)) + value


def field(tag: int, values: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    return values.map(lambda v: tlv(tag, v))


def seq(*fields: st.SearchStrategy[bytes], max_size: int = 10) -> st.SearchStrategy[bytes]:
    return st.lists(st.one_of(*fields), max_size=max_size).map(b"".join)


u32 = st.one_of(st.integers(0, 2**32 - 1), st.sampled_from([0, 1, 64, 65, 65535, 65536, 2**32 - 1]))
u32b = u32.map(lambda v: v.to_bytes(4, "big"))
# wrong-sized integers and bools must be rejected, not read past
intish = st.one_of(u32b, st.binary(max_size=9))
u64b = st.one_of(st.integers(0, 2**64 - 1).map(lambda v: v.to_bytes(8, "big")), st.binary(max_size=9))
boolb = st.one_of(st.sampled_from([b"\x00", b"\x01"]), st.binary(max_size=2))
text = st.one_of(st.text(max_size=24).map(str.encode), st.binary(max_size=24))
names = st.one_of(
    st.from_regex(r"[a-zA-Z0-9_.-]{1,70}", fullmatch=True).map(str.encode),
    st.sampled_from([b".", b"..", b"", b"tmpfs", b"img0", b"a/b", b"x\x00y"]),
)
paths = st.one_of(st.from_regex(r"(/[a-z.]{0,6}){0,5}", fullmatch=True).map(str.encode), text)
envs = st.one_of(st.from_regex(r"[A-Z]{0,5}=[a-z ]{0,8}", fullmatch=True).map(str.encode), text)
addrs = st.one_of(
    st.sampled_from(
        [
            b"10.0.0.2/24",
            b"fd00::2/64",
            b"0.0.0.0/0",
            b"1.2.3.4/33",
            b"::/0",
            b"10.0.0.1",
            b"/24",
            b"1.2.3.4/",
            b"1.2.3.4/0024",
        ]
    ),
    text,
)
macs = st.one_of(
    st.sampled_from([b"52:54:00:12:34:56", b"52:54:00:12:34", b"zz:54:00:12:34:56", b"52:54:00:12:34:56:"]),
    text,
)

process = seq(
    field(gp.TAG_PROCESS_ID, intish),
    field(gp.TAG_ARG, text),
    field(gp.TAG_ENV, envs),
    field(gp.TAG_CWD, paths),
    field(gp.TAG_UID, intish),
    field(gp.TAG_GID, intish),
    field(gp.TAG_GROUP, intish),
    field(gp.TAG_TERMINAL, boolb),
    field(gp.TAG_STDIN, boolb),
    field(gp.TAG_ROWS, intish),
    field(gp.TAG_COLS, intish),
    field(77, text),
    max_size=14,
)
sources = st.one_of(
    names,
    st.from_regex(r"pod:[a-z0-9-]{0,66}", fullmatch=True).map(str.encode),
    st.sampled_from([b"pod:", b"pod:A", b"pod:a/b", b"pod:" + b"a" * 64]),
)
subpaths = st.one_of(
    st.from_regex(r"[a-z./]{0,12}", fullmatch=True).map(str.encode),
    st.sampled_from([b"..", b"a/../b", b"/abs", b"./a", b"a//b/", b""]),
    text,
)
mount = seq(
    field(gp.TAG_SOURCE, sources),
    field(gp.TAG_TARGET, paths),
    field(gp.TAG_FSTYPE, names),
    field(gp.TAG_READONLY, boolb),
    field(gp.TAG_SUBPATH, subpaths),
    field(gp.TAG_SIZE_LIMIT, u64b),
)
create = seq(
    field(gp.TAG_CONTAINER_ID, names),
    field(gp.TAG_IMAGE_DISK, names),
    field(gp.TAG_PROCESS, process),
    field(gp.TAG_MOUNT, mount),
    field(gp.TAG_MEMORY_LIMIT, u64b),
    field(gp.TAG_FSGROUP, intish),
)
headers = st.one_of(
    st.from_regex(r"[A-Za-z-]{0,8}:[ a-z]{0,8}", fullmatch=True).map(str.encode),
    st.sampled_from([b"X: a\r\nY: b", b": v", b"Bad Name: v", b"Host: x"]),
    text,
)
probe = seq(
    field(gp.TAG_PROBE_KIND, st.one_of(st.sampled_from([b"tcp", b"http", b"udp", b""]), text)),
    field(gp.TAG_PORT, intish),
    field(gp.TAG_HOST, st.one_of(addrs, st.just(b"127.0.0.1"))),
    field(gp.TAG_PATH, paths),
    field(gp.TAG_TIMEOUT_MS, intish),
    field(gp.TAG_HEADER, headers),
)
execm = seq(field(gp.TAG_CONTAINER_ID, names), field(gp.TAG_PROCESS, process))
iface = seq(field(gp.TAG_MAC, macs), field(gp.TAG_ADDRESS, addrs), field(gp.TAG_MTU, intish))
route = seq(field(gp.TAG_DEST, addrs), field(gp.TAG_GATEWAY, addrs))
dns_options = st.one_of(
    st.sampled_from([b"ndots:5", b"edns0", b"a b", b"x\ny", b"", b"\x7f", b"o" * 65]), text
)
setup = seq(
    field(gp.TAG_HOSTNAME, text),
    field(gp.TAG_TIME_NS, u64b),
    field(gp.TAG_RANDOM_SEED, st.binary(max_size=64)),
    field(gp.TAG_DNS_SERVER, addrs),
    field(gp.TAG_DNS_SEARCH, text),
    field(gp.TAG_DNS_OPTION, dns_options),
    field(gp.TAG_HOSTS_LINE, text),
    field(gp.TAG_IFACE, iface),
    field(gp.TAG_ROUTE, route),
    max_size=12,
)
small = seq(
    field(gp.TAG_PROCESS_ID, intish),
    field(gp.TAG_SIGNAL, intish),
    field(gp.TAG_ROWS, intish),
    field(gp.TAG_COLS, intish),
    field(gp.TAG_CONTAINER_ID, names),
    field(gp.TAG_GRACE_MS, intish),
)
any_tlv = seq(st.tuples(st.integers(0, 65535), st.binary(max_size=16)).map(lambda t: tlv(*t)))
payloads = st.one_of(create, execm, setup, small, probe, any_tlv, st.binary(max_size=200))
types = st.one_of(st.sampled_from(sorted(set(range(1, 9)) | set(range(32, 43)))), st.integers(0, 65535))


@st.composite
def frames(draw: st.DrawFn) -> bytes:
    payload: bytes = draw(payloads)
    length = draw(st.one_of(st.just(len(payload)), st.just(len(payload)), u32))
    flags = draw(st.sampled_from([0, 0, 0, 1, 0xFFFF]))
    frame = struct.pack(">IHHI", length, draw(types), flags, draw(u32)) + payload
    cut = draw(st.one_of(st.none(), st.integers(0, len(frame))))
    return frame if cut is None else bytes(frame[:cut])


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(frames()))
    for _ in range(draw(st.integers(1, 4))):
        if data:
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    return bytes(data)


inputs = st.one_of(frames(), payloads, mutated(), st.binary(max_size=300))


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
@given(batch=st.lists(inputs, min_size=20, max_size=120))
def test_random_batches(harness: Path, batch: list[bytes]) -> None:
    run_harness(harness, batch)


def test_edge_cases(harness: Path) -> None:
    """Sizes at and over each limit, deep nesting, and the largest legal frame."""
    arg = tlv(gp.TAG_ARG, b"x")
    big_proc = tlv(gp.TAG_PROCESS_ID, b"\0\0\0\1") + arg * 4097  # one ARG past MSG_MAX_ARGS
    ok_proc = tlv(gp.TAG_PROCESS_ID, b"\0\0\0\1") + arg * 4096
    long_arg = tlv(gp.TAG_PROCESS_ID, b"\0\0\0\1") + tlv(gp.TAG_ARG, b"a" * 131073)
    groups = tlv(gp.TAG_PROCESS_ID, b"\0\0\0\1") + arg + tlv(gp.TAG_GROUP, b"\0\0\0\5") * 257
    cid = tlv(gp.TAG_CONTAINER_ID, b"c1") + tlv(gp.TAG_IMAGE_DISK, b"img0")
    mounts = (
        cid
        + tlv(gp.TAG_PROCESS, ok_proc)
        + tlv(gp.TAG_MOUNT, tlv(gp.TAG_SOURCE, b"tmpfs") + tlv(gp.TAG_TARGET, b"/d")) * 65
    )
    nested = b"x"
    for _ in range(200):
        nested = tlv(gp.TAG_PROCESS, nested)
    cases = [
        b"",
        struct.pack(">IHHI", gp.PROTO_MAX_PAYLOAD, gp.MSG_CREATE, 0, 1) + b"\0" * gp.PROTO_MAX_PAYLOAD,
        struct.pack(">IHHI", gp.PROTO_MAX_PAYLOAD + 1, gp.MSG_CREATE, 0, 1),
        struct.pack(">IHHI", 2**32 - 1, gp.MSG_SETUP, 0, 1) + b"\0" * 12,
        struct.pack(">HI", gp.TAG_ARG, 2**32 - 1) + b"abc",
        struct.pack(">HI", gp.TAG_ARG, 7) + b"abcdef",
        cid + tlv(gp.TAG_PROCESS, big_proc),
        cid + tlv(gp.TAG_PROCESS, ok_proc),
        cid + tlv(gp.TAG_PROCESS, long_arg),
        cid + tlv(gp.TAG_PROCESS, groups),
        mounts,
        nested,
        tlv(gp.TAG_IFACE, tlv(gp.TAG_MAC, b"52:54:00:12:34:56") + tlv(gp.TAG_ADDRESS, b"10.0.0.2/24") * 17),
        tlv(gp.TAG_RANDOM_SEED, b"\0" * 4097),
        tlv(gp.TAG_DNS_OPTION, b"ndots:5") * 17,  # one DNS_OPTION past MSG_MAX_DNS
        tlv(gp.TAG_DNS_OPTION, b"o" * 64) + tlv(gp.TAG_DNS_OPTION, b"o" * 65),
        tlv(gp.TAG_ROUTE, tlv(gp.TAG_DEST, b"0.0.0.0/0") + tlv(gp.TAG_GATEWAY, b"fd00::1")),
        tlv(gp.TAG_PROBE_KIND, b"http")
        + tlv(gp.TAG_PORT, b"\0\0\0\x50")
        + tlv(gp.TAG_HEADER, b"X-A: b") * 65,  # one HEADER past MSG_MAX_HEADERS
        tlv(gp.TAG_PROBE_KIND, b"http")
        + tlv(gp.TAG_PORT, b"\0\0\0\x50")
        + tlv(gp.TAG_PATH, b"/" + b"a" * 2048),
        cid
        + tlv(gp.TAG_PROCESS, ok_proc)
        + tlv(
            gp.TAG_MOUNT,
            tlv(gp.TAG_SOURCE, b"pod:" + b"v" * 63)
            + tlv(gp.TAG_TARGET, b"/d")
            + tlv(gp.TAG_SUBPATH, b"a/" * 2047),
        ),
    ]
    out = run_harness(harness, cases)
    assert "parses ok" in out


def test_valid_requests_parse(harness: Path) -> None:
    """Well-formed requests are accepted: the harness counts them as parsed."""
    proc = (
        gp.TLV()
        .add_u32(gp.TAG_PROCESS_ID, 1)
        .add_strs(gp.TAG_ARG, ["sh", "-c", "true"])
        .add_str(gp.TAG_ENV, "PATH=/bin")
        .add_str(gp.TAG_CWD, "/")
    )
    create = (
        gp.TLV()
        .add_str(gp.TAG_CONTAINER_ID, "c1")
        .add_str(gp.TAG_IMAGE_DISK, "img0")
        .add_tlv(gp.TAG_PROCESS, proc)
        .encode()
    )
    out = run_harness(harness, [create])
    ok = int(out.split(" parses ok")[0].rsplit(" ", 1)[1])
    assert ok >= 2  # the CREATE and EXEC parsers both accept it (EXEC ignores IMAGE_DISK)


def test_valid_probe_and_volume_requests_parse(harness: Path) -> None:
    proc = gp.TLV().add_u32(gp.TAG_PROCESS_ID, 1).add_str(gp.TAG_ARG, "true")
    vol = (
        gp.TLV()
        .add_str(gp.TAG_SOURCE, "pod:cache-1")
        .add_str(gp.TAG_TARGET, "/data")
        .add_str(gp.TAG_SUBPATH, "a/b")
        .add_u64(gp.TAG_SIZE_LIMIT, 1 << 20)
    )
    create = (
        gp.TLV()
        .add_str(gp.TAG_CONTAINER_ID, "c1")
        .add_str(gp.TAG_IMAGE_DISK, "img0")
        .add_tlv(gp.TAG_PROCESS, proc)
        .add_tlv(gp.TAG_MOUNT, vol)
        .add_u32(gp.TAG_FSGROUP, 2000)
    )
    probe = (
        gp.TLV()
        .add_str(gp.TAG_PROBE_KIND, "http")
        .add_u32(gp.TAG_PORT, 8080)
        .add_str(gp.TAG_PATH, "/healthz")
        .add_str(gp.TAG_HEADER, "X-Probe: 1")
        .add_u32(gp.TAG_TIMEOUT_MS, 500)
    )
    one = run_harness(harness, [create.encode()])
    two = run_harness(harness, [create.encode(), probe.encode()])

    def ok(out: str) -> int:
        return int(out.split(" parses ok")[0].rsplit(" ", 1)[1])

    assert ok(two) >= ok(one) + 1  # the PROBE parser accepts the PROBE


def test_dns_options_are_bounded_and_validated(harness: Path) -> None:
    """A SETUP with good options parses; a space, a control character, an empty or an overlong
    option, or one option too many, is rejected (counted by the parsers that accept SETUP)."""

    def setup_ok(*options: bytes) -> int:
        # A 12-byte unknown field first: read as a frame header it is oversized, so the harness
        # also parses what follows it, which is exactly the options: SETUP is parsed twice.
        payload = tlv(999, b"\0" * 6) + b"".join(tlv(gp.TAG_DNS_OPTION, o) for o in options)
        out = run_harness(harness, [payload])
        return int(out.split(" parses ok")[0].rsplit(" ", 1)[1])

    base = setup_ok()
    assert setup_ok(b"ndots:5", b"timeout:2", b"edns0", b"o" * 64) == base
    assert setup_ok(*[b"edns0"] * 16) == base
    for bad in ([b"nd ots:5"], [b"ndots:5\n"], [b""], [b"\x01"], [b"\xc3\xa9"], [b"o" * 65], [b"edns0"] * 17):
        assert setup_ok(*bad) == base - 2, bad
