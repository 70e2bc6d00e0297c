"""The DNS server of tenant networks (hypernetes/network/dns.py): the codec (with hypothesis
fuzzing the parser and the query path), the records made from Services and Endpoints, and real
servers in network namespaces this test makes and removes, with a fake upstream resolver on
127.0.0.1. Nothing here touches the host's interfaces or the internet."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gc
import ipaddress
import os
import secrets
import shutil
import socket
import struct
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import replace
from typing import Any, cast

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hypernetes.metrics import REGISTRY, exposition
from hypernetes.network import dns
from hypernetes.network.dns import (
    AAAA,
    ANY,
    AXFR,
    CLASS_IN,
    CNAME,
    FORMERR,
    NOERROR,
    NOTIMP,
    NXDOMAIN,
    PTR,
    REFUSED,
    RR,
    SERVFAIL,
    SOA,
    SRV,
    TXT,
    A,
    Cname,
    DnsError,
    DnsServer,
    Edns,
    Message,
    NameData,
    Ptr,
    Question,
    SoaData,
    Srv,
    SrvData,
    Zone,
    decode,
    encode,
    name_from_text,
    records_for,
)
from hypernetes.network.netns import run_in_netns
from tests.support.listening import refusing_port

N = name_from_text


def query(name: str, qtype: int = A, *, qid: int = 0x4242, edns: Edns | None = None) -> bytes:
    labels = tuple(label.encode() for label in name.rstrip(".").split("."))  # in the case given
    return encode(Message(id=qid, rd=True, questions=[Question(labels, qtype)], edns=edns))


def addresses(msg: Message) -> set[str]:
    return {
        str(ipaddress.ip_address(rr.rdata))
        for rr in msg.answers
        if rr.rtype in (A, AAAA) and isinstance(rr.rdata, bytes)
    }


# -- codec -------------------------------------------------------------------------------------


def test_decode_a_query_as_dig_sends_it() -> None:
    raw = bytes.fromhex("12340100000100000000000007") + b"example\x03com\x00\x00\x01\x00\x01"
    msg = decode(raw)
    assert (msg.id, msg.qr, msg.rd, msg.opcode) == (0x1234, False, True, 0)
    assert msg.questions == [Question((b"example", b"com"), A, CLASS_IN)]
    assert encode(msg) == raw


def test_roundtrip_compresses_names_and_keeps_every_field() -> None:
    owner = N("web.shop.svc.cluster.local")
    msg = Message(
        id=7,
        qr=True,
        aa=True,
        rd=True,
        ra=True,
        cd=True,
        rcode=NXDOMAIN,
        questions=[Question(owner, ANY)],
        answers=[
            RR(owner, A, CLASS_IN, 5, bytes([10, 0, 0, 1])),
            RR(owner, CNAME, CLASS_IN, 5, NameData(N("x.cluster.local"))),
            RR(owner, SRV, CLASS_IN, 5, SrvData(0, 100, 80, owner)),
        ],
        authority=[
            RR(
                N("cluster.local"),
                SOA,
                CLASS_IN,
                5,
                SoaData(N("ns.dns.cluster.local"), N("hostmaster.cluster.local"), 1, 2, 3, 4, 5),
            )
        ],
        additional=[RR(N("t.example"), TXT, CLASS_IN, 60, b"\x02hi")],
        edns=Edns(udp_size=1232, do=True, options=b"\x00\x0a\x00\x02ab"),
    )
    wire = encode(msg)
    assert decode(wire) == msg
    # owners are pointers to the question; the SRV target is not compressed (RFC 2782)
    assert wire.count(b"\x03web") == 2 and len(wire) < 250
    # a pointer to the question gives the answers the asker's case
    asked = replace(msg, questions=[Question((b"WEB", b"Shop", b"svc", b"cluster", b"local"), ANY)])
    assert decode(encode(asked)).answers[0].name == asked.questions[0].name


def test_extended_rcode_travels_in_opt() -> None:
    msg = Message(id=1, qr=True, rcode=dns.BADVERS, edns=Edns())
    wire = encode(msg)
    assert wire[3] & 0xF == 0
    assert decode(wire).rcode == dns.BADVERS


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b"\xc0\x0c\x00\x01\x00\x01", "pointer to itself"),
        (b"\xc0\x0e\x00\x01\x00\x01", "pointer forwards"),
        (b"\x01a\xc0\x0c\x00\x01\x00\x01", "pointer back into its own name"),
        (b"\x41" + b"a" * 65 + b"\x00\x00\x01\x00\x01", "extended label type"),
        (b"\x81a\x00\x00\x01\x00\x01", "reserved label type"),
        (
            b"".join(b"\x3f" + c * 63 for c in (b"a", b"b", b"c", b"d")) + b"\x00\x00\x01\x00\x01",
            "name over 255",
        ),
        (b"\x07example\x03com\x00\x00\x01", "truncated question"),
        (b"\x07exam", "truncated label"),
        (b"\x07example\x03com\x00\x00\x01\x00\x01\x00", "trailing byte"),
    ],
)
def test_malformed_questions_are_rejected(body: bytes, why: str) -> None:
    with pytest.raises(DnsError):
        decode(bytes.fromhex("000101000001000000000000") + body)


def test_pointer_chains_are_bounded() -> None:
    # a long chain of pointers, each to the one before: legal direction, absurd length
    head = bytes.fromhex("000101000001000000000000")
    body = bytearray(b"\x00")  # offset 12: the root
    for _ in range(200):
        off = 12 + len(body) - 2 if len(body) > 1 else 12
        body += struct.pack("!H", 0xC000 | off)
    data = head + bytes(body[:-2]) + bytes(body[-2:]) + b"\x00\x01\x00\x01"
    with pytest.raises(DnsError):
        decode(data)


@pytest.mark.parametrize(
    "additional",
    [
        b"\x00\x00\x29\x04\xd0\x00\x00\x00\x00\x00\x00" * 2,  # two OPT records
        b"\x01a\x00\x00\x29\x04\xd0\x00\x00\x00\x00\x00\x00",  # OPT not at the root
        b"\x00\x00\x29\x04\xd0\x00\x00\x00\x00\x00\x03\x00\x01\x00",  # option TLV cut short
    ],
)
def test_bad_opt_records_are_rejected(additional: bytes) -> None:
    n = 2 if additional.count(b"\x29\x04\xd0") == 2 else 1
    data = bytes.fromhex("00010100000100000000") + struct.pack("!H", n) + b"\x01a\x00\x00\x01\x00\x01"
    with pytest.raises(DnsError):
        decode(data + additional)


def test_address_records_must_have_address_lengths() -> None:
    msg = Message(id=1, qr=True, answers=[RR(N("a"), A, CLASS_IN, 1, b"\x01\x02\x03")])
    with pytest.raises(DnsError):
        decode(encode(msg))


def test_encode_truncates_whole_sections_over_udp_and_keeps_what_fits_over_tcp() -> None:
    owner = N("big.t.svc.cluster.local")
    answers = [RR(owner, A, CLASS_IN, 5, bytes([10, 0, i // 256, i % 256])) for i in range(100)]
    msg = Message(id=9, qr=True, questions=[Question(owner, A)], answers=answers, edns=Edns())
    udp = decode(encode(msg, 512))
    assert udp.tc and not udp.answers and udp.edns is not None
    tcp = decode(encode(msg, 600, partial=True))
    assert tcp.tc and 0 < len(tcp.answers) < 100
    assert not decode(encode(msg)).tc


# -- fuzzing -----------------------------------------------------------------------------------

# lower case: compression matches names case-insensitively, as DNS compares them (a pointer to the
# question gives answers the asker's case, tested above), so mixed case does not round-trip exactly
labels = st.binary(min_size=1, max_size=12).map(bytes.lower)
names = st.lists(labels, max_size=5).map(tuple)


@st.composite
def messages(draw: st.DrawFn) -> Message:
    def rr() -> RR:
        kind = draw(st.sampled_from([A, AAAA, CNAME, SRV, TXT, SOA]))
        data: Any
        if kind == A:
            data = draw(st.binary(min_size=4, max_size=4))
        elif kind == AAAA:
            data = draw(st.binary(min_size=16, max_size=16))
        elif kind == CNAME:
            data = NameData(draw(names))
        elif kind == SRV:
            u16 = st.integers(0, 65535)
            data = SrvData(draw(u16), draw(u16), draw(u16), draw(names))
        elif kind == SOA:
            data = SoaData(draw(names), draw(names), *draw(st.tuples(*[st.integers(0, 2**32 - 1)] * 5)))
        else:
            data = draw(st.binary(max_size=20))
        return RR(draw(names), kind, CLASS_IN, draw(st.integers(0, 2**31)), data)

    return Message(
        id=draw(st.integers(0, 65535)),
        qr=draw(st.booleans()),
        aa=draw(st.booleans()),
        rd=draw(st.booleans()),
        rcode=draw(st.integers(0, 15)),
        questions=[
            Question(draw(names), draw(st.integers(0, 65535))) for _ in range(draw(st.integers(0, 2)))
        ],
        answers=[rr() for _ in range(draw(st.integers(0, 4)))],
        authority=[rr() for _ in range(draw(st.integers(0, 2)))],
        edns=draw(st.one_of(st.none(), st.builds(Edns, st.integers(0, 65535)))),
    )


@settings(max_examples=400, deadline=None)
@given(messages())
def test_fuzz_roundtrip(msg: Message) -> None:
    assert decode(encode(msg)) == msg


@settings(max_examples=1000, deadline=None)
@given(
    messages(), st.lists(st.tuples(st.integers(0, 400), st.integers(0, 255)), max_size=6), st.integers(0, 400)
)
def test_fuzz_mutated_messages_decode_or_raise_dns_error(
    msg: Message, flips: list[tuple[int, int]], cut: int
) -> None:
    data = bytearray(encode(msg))
    for pos, value in flips:
        if pos < len(data):
            data[pos] = value
    with contextlib.suppress(DnsError):
        decode(bytes(data[: len(data) - cut % (len(data) + 1)]))


@settings(max_examples=1500, deadline=None)
@given(st.binary(max_size=700))
def test_fuzz_random_bytes_decode_or_raise_dns_error(data: bytes) -> None:
    with contextlib.suppress(DnsError):
        decode(data)


@settings(max_examples=800, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.one_of(
        st.binary(max_size=700),
        st.builds(lambda m, b: encode(m)[:12] + b, messages(), st.binary(max_size=80)),
        messages().map(
            lambda m: encode(
                Message(id=m.id, questions=m.questions[:1] or [Question((b"x",), A)], edns=m.edns)
            )
        ),
    ),
    st.booleans(),
)
def test_fuzz_the_query_path_never_crashes_nor_amplifies(data: bytes, tcp: bool) -> None:
    server = DnsServer(upstreams=[], rate=0)
    server.set_records("n", {"web.shop.svc.cluster.local": ["10.96.0.5"]})
    reply = asyncio.run(server.answer("n", data, tcp=tcp))
    assert not server.dropped.get(("n", "error"))
    if reply is not None:
        msg = decode(reply)
        assert msg.qr and len(reply) <= 512
        if msg.rcode in (FORMERR, NOTIMP):
            assert len(reply) <= 12 + 11  # a bare header, at most an OPT
            assert len(reply) <= len(data) + 11


# -- records from API objects ------------------------------------------------------------------


def svc(
    name: str,
    ns: str,
    cluster_ip: str | list[str] | None,
    ports: list[dict[str, Any]] | None = None,
    **spec: Any,
) -> dict[str, Any]:
    s: dict[str, Any] = {"ports": ports or [], **spec}
    if isinstance(cluster_ip, list):
        s["clusterIP"], s["clusterIPs"] = cluster_ip[0], cluster_ip
    elif cluster_ip is not None:
        s["clusterIP"] = cluster_ip
    return {"kind": "Service", "metadata": {"name": name, "namespace": ns}, "spec": s}


def endpoints(
    name: str,
    ns: str,
    addrs: list[dict[str, Any]],
    ports: list[dict[str, Any]] | None = None,
    not_ready: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    subset: dict[str, Any] = {"addresses": addrs, "ports": ports or []}
    if not_ready:
        subset["notReadyAddresses"] = not_ready
    return {"kind": "Endpoints", "metadata": {"name": name, "namespace": ns}, "subsets": [subset]}


def test_records_for_cluster_ip_services() -> None:
    recs = records_for(
        [
            svc(
                "web",
                "shop",
                ["10.96.0.5", "fd00::5"],
                [
                    {"name": "http", "port": 80, "protocol": "TCP"},
                    {"port": 81},
                    {"name": "dns", "port": 53, "protocol": "UDP"},
                ],
            )
        ],
        [],
    )
    fqdn = "web.shop.svc.cluster.local"
    assert recs[fqdn] == [ipaddress.ip_address("10.96.0.5"), ipaddress.ip_address("fd00::5")]
    assert recs[f"_http._tcp.{fqdn}"] == [Srv(0, 100, 80, fqdn)]
    assert recs[f"_dns._udp.{fqdn}"] == [Srv(0, 100, 53, fqdn)]
    assert recs["5.0.96.10.in-addr.arpa"] == [Ptr(fqdn)]
    assert recs[ipaddress.ip_address("fd00::5").reverse_pointer] == [Ptr(fqdn)]
    assert len(recs) == 5  # the unnamed port has no SRV record


def test_records_for_headless_services() -> None:
    recs = records_for(
        [svc("db", "shop", "None", [{"name": "pg", "port": 5432}]), svc("empty", "shop", "None")],
        [
            endpoints(
                "db",
                "shop",
                [{"ip": "10.1.0.7", "hostname": "db-0"}, {"ip": "10.1.0.8"}],
                [{"name": "pg", "port": 5432, "protocol": "TCP"}],
                not_ready=[{"ip": "10.1.0.9"}],
            ),
            endpoints("other", "shop", [{"ip": "10.1.0.10"}]),
        ],
    )
    fqdn = "db.shop.svc.cluster.local"
    assert set(recs[fqdn]) == {ipaddress.ip_address("10.1.0.7"), ipaddress.ip_address("10.1.0.8")}
    assert recs[f"db-0.{fqdn}"] == [ipaddress.ip_address("10.1.0.7")]
    assert recs[f"10-1-0-8.{fqdn}"] == [ipaddress.ip_address("10.1.0.8")]
    assert set(recs[f"_pg._tcp.{fqdn}"]) == {
        Srv(0, 50, 5432, f"db-0.{fqdn}"),
        Srv(0, 50, 5432, f"10-1-0-8.{fqdn}"),
    }
    assert recs["7.0.1.10.in-addr.arpa"] == [Ptr(f"db-0.{fqdn}")]
    assert recs["empty.shop.svc.cluster.local"] == []  # exists, no addresses
    assert not any("10.1.0.9" in str(v) or "10-1-0-9" in k for k, vs in recs.items() for v in vs)


def test_records_for_external_names_and_junk() -> None:
    recs = records_for(
        [
            svc("ext", "shop", None, type="ExternalName", externalName="db.Example.com"),
            svc("bad name", "shop", "10.96.0.9"),
            svc("noip", "shop", None),
            svc("x", "shop", "not-an-ip"),
            {"spec": None},
        ],
        [{"metadata": None}],
    )
    assert recs == {"ext.shop.svc.cluster.local": [Cname("db.example.com.")]}
    Zone(recs)  # everything records_for makes is servable


# -- answers, without sockets ------------------------------------------------------------------


def served(records: dict[str, list[Any]], **kwargs: Any) -> DnsServer:
    server = DnsServer(upstreams=[], **kwargs)
    server.set_records("n", records)
    return server


async def ask_direct(server: DnsServer, data: bytes, tcp: bool = False) -> Message:
    reply = await server.answer("n", data, tcp=tcp)
    assert reply is not None
    return decode(reply)


async def test_authoritative_answers() -> None:
    server = served(
        records_for(
            [
                svc("web", "shop", "10.96.0.5"),
                svc("db", "shop", "None"),
                svc("ext", "shop", None, type="ExternalName", externalName="web.shop.svc.cluster.local"),
            ],
            [endpoints("db", "shop", [{"ip": "10.1.0.7", "hostname": "db-0"}])],
        )
    )
    msg = await ask_direct(server, query("WEB.Shop.svc.cluster.local"))
    assert (msg.rcode, msg.aa, addresses(msg)) == (NOERROR, True, {"10.96.0.5"})
    assert msg.questions[0].name == (b"WEB", b"Shop", b"svc", b"cluster", b"local")  # the asker's case
    assert msg.answers[0].ttl == 5
    # a name that exists without data of that type, or only as a parent: NODATA with SOA
    for name, qtype in (("web.shop.svc.cluster.local", AAAA), ("shop.svc.cluster.local", A)):
        msg = await ask_direct(server, query(name, qtype))
        assert (msg.rcode, msg.answers, [r.rtype for r in msg.authority]) == (NOERROR, [], [SOA])
    msg = await ask_direct(server, query("nope.shop.svc.cluster.local"))
    assert (msg.rcode, msg.aa, [r.rtype for r in msg.authority]) == (NXDOMAIN, True, [SOA])
    soa = msg.authority[0]
    assert soa.name == N("cluster.local") and isinstance(soa.rdata, SoaData) and soa.rdata.minimum == 5
    msg = await ask_direct(server, query("cluster.local", SOA))
    assert [r.rtype for r in msg.answers] == [SOA]
    msg = await ask_direct(server, query("ext.shop.svc.cluster.local"))
    assert [r.rtype for r in msg.answers] == [CNAME, A] and addresses(msg) == {"10.96.0.5"}
    msg = await ask_direct(server, query("5.0.96.10.in-addr.arpa", PTR))
    assert msg.answers[0].rdata == NameData(N("web.shop.svc.cluster.local"))
    msg = await ask_direct(server, query("db-0.db.shop.svc.cluster.local"))
    assert addresses(msg) == {"10.1.0.7"}


async def test_protocol_errors() -> None:
    server = served({"web.shop.svc.cluster.local": ["10.96.0.5"]})
    two = bytearray(query("a.cluster.local"))
    two[5] = 2
    for data, rcode in (
        (bytes(two), FORMERR),
        (query("x") + b"\x00", FORMERR),
        (bytes([0, 1, 0x28, 0]) + query("x")[4:], NOTIMP),  # opcode UPDATE
        (query("cluster.local", AXFR), REFUSED),
        (encode(Message(id=1, questions=[Question(N("x"), A, 3)])), REFUSED),
    ):  # CHAOS
        msg = await ask_direct(server, data)
        assert msg.rcode == rcode and msg.qr
    msg = await ask_direct(server, query("x.cluster.local", edns=Edns(version=1)))
    assert msg.rcode == dns.BADVERS and msg.edns is not None
    # responses and runts get nothing: answering them invites loops and reflection
    assert await server.answer("n", encode(Message(id=1, qr=True, questions=[Question(N("x"), A)]))) is None
    assert await server.answer("n", b"\x00\x01\x00") is None
    assert await server.answer("unknown-network", query("x")) is None


async def test_truncation_follows_edns_up_to_the_bound() -> None:
    eps = [{"ip": f"10.1.{i // 250}.{i % 250 + 1}"} for i in range(100)]
    server = served(
        records_for(
            [svc("big", "t", "None"), svc("mid", "t", "None")],
            [endpoints("big", "t", eps), endpoints("mid", "t", eps[:60])],
        )
    )
    mid = "mid.t.svc.cluster.local"
    msg = await ask_direct(server, query(mid))  # 60 records do not fit 512 bytes
    assert msg.tc and not msg.answers
    msg = await ask_direct(server, query(mid, edns=Edns(udp_size=65000)))
    assert not msg.tc and len(msg.answers) == 60 and msg.edns is not None and msg.edns.udp_size == 1232
    reply = await server.answer("n", query("big.t.svc.cluster.local", edns=Edns(udp_size=65000)))
    assert reply is not None and len(reply) <= 1232 and decode(reply).tc  # 1232 is our bound
    msg = await ask_direct(server, query("big.t.svc.cluster.local"), tcp=True)
    assert not msg.tc and len(msg.answers) == 100


async def test_no_upstreams_is_servfail_and_one_networks_names_stay_its_own() -> None:
    server = served({"web.shop.svc.cluster.local": ["10.96.0.5"]})
    server.set_records("other", {"db.shop.svc.cluster.local": ["10.96.0.6"]})
    assert (await ask_direct(server, query("example.com"))).rcode == SERVFAIL
    assert (await ask_direct(server, query("db.shop.svc.cluster.local"))).rcode == NXDOMAIN
    with pytest.raises(ValueError):
        server.set_records("n", {"web.example.com": ["10.0.0.1"]})  # outside the domain
    assert (await ask_direct(server, query("web.shop.svc.cluster.local"))).rcode == NOERROR  # kept


def test_rate_limit_per_source() -> None:
    limiter = dns._RateLimiter(rate=10, burst=5, max_sources=2)
    assert sum(limiter.allow("a") for _ in range(20)) == 5
    assert limiter.allow("b") and limiter.allow("c")  # "a" is forgotten: the table stays bounded
    assert len(limiter._buckets) == 2
    time.sleep(0.2)
    assert limiter.allow("c")


def test_guest_resolv_conf() -> None:
    assert dns.guest_resolv_conf("shop", "10.0.0.1") == (
        "search shop.svc.cluster.local svc.cluster.local cluster.local\n"
        "nameserver 10.0.0.1\noptions ndots:5\n"
    )


def test_upstream_parsing_and_resolv_conf(tmp_path: Any) -> None:
    assert dns.parse_upstream("10.0.0.1") == ("10.0.0.1", 53)
    assert dns.parse_upstream("127.0.0.1:5353") == ("127.0.0.1", 5353)
    assert dns.parse_upstream("[::1]:54") == ("::1", 54)
    assert dns.parse_upstream("fe80::1") == ("fe80::1", 53)
    with pytest.raises(ValueError):
        dns.parse_upstream("resolver.example")
    conf = tmp_path / "resolv.conf"
    conf.write_text(
        "# x\nsearch a\nnameserver 10.0.0.1\nnameserver bogus\nnameserver ::1\n"
        "nameserver 10.0.0.2\nnameserver 10.0.0.3\n"
    )
    assert dns.read_resolv_conf(str(conf)) == ["10.0.0.1", "::1", "10.0.0.2"]
    assert dns.read_resolv_conf(str(tmp_path / "missing")) == []


# -- real servers in network namespaces --------------------------------------------------------

needs_netns = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("ip"), reason="needs root and iproute2 to make network namespaces"
)
GATEWAY = "10.77.0.1"


def _ipcmd(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


@pytest.fixture
def make_netns() -> Iterator[Callable[..., str]]:
    """Network namespaces `hn-dnstest-<random>`, each with lo up and the gateway address on one
    end of a veth pair kept inside it (no dummy module on these hosts); always deleted afterwards."""
    made: list[str] = []

    def make(name: str = "") -> str:
        name = name or f"hn-dnstest-{secrets.token_hex(4)}"
        _ipcmd("netns", "add", name)
        made.append(name)
        _ipcmd("-n", name, "link", "set", "lo", "up")
        _ipcmd("-n", name, "link", "add", "gw0", "type", "veth", "peer", "name", "gw1")
        _ipcmd("-n", name, "addr", "add", f"{GATEWAY}/24", "dev", "gw0")
        _ipcmd("-n", name, "link", "set", "gw0", "up")
        _ipcmd("-n", name, "link", "set", "gw1", "up")
        return name

    yield make
    for name in made:
        subprocess.run(["ip", "netns", "delete", name], capture_output=True, timeout=10)


async def exchange(
    netns: str, data: bytes, *, tcp: bool = False, timeout: float = 3.0, port: int = 53
) -> bytes | None:
    """Send raw bytes to the gateway from a socket made inside `netns`; None if no reply."""
    loop = asyncio.get_running_loop()
    kind = socket.SOCK_STREAM if tcp else socket.SOCK_DGRAM
    sock = run_in_netns(netns, lambda: socket.socket(socket.AF_INET, kind))
    sock.setblocking(False)
    try:
        if tcp:
            await asyncio.wait_for(loop.sock_connect(sock, (GATEWAY, port)), timeout)
            reader, writer = await asyncio.open_connection(sock=sock)
            try:
                writer.write(struct.pack("!H", len(data)) + data)
                (n,) = struct.unpack("!H", await asyncio.wait_for(reader.readexactly(2), timeout))
                return await asyncio.wait_for(reader.readexactly(n), timeout)
            except (asyncio.IncompleteReadError, ConnectionError):
                return None
            finally:
                writer.close()
        await loop.sock_sendto(sock, data, (GATEWAY, port))
        try:
            return await asyncio.wait_for(loop.sock_recv(sock, 65535), timeout)
        except TimeoutError:
            return None
    finally:
        sock.close()


async def ask(
    netns: str,
    name: str,
    qtype: int = A,
    *,
    tcp: bool = False,
    timeout: float = 3.0,
    edns: Edns | None = None,
) -> Message:
    qid = secrets.randbits(16)
    reply = await exchange(netns, query(name, qtype, qid=qid, edns=edns), tcp=tcp, timeout=timeout)
    assert reply is not None, f"no answer for {name}"
    msg = decode(reply)
    assert msg.id == qid and msg.qr
    return msg


async def dig(netns: str, *args: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        "ip",
        "netns",
        "exec",
        netns,
        "dig",
        f"@{GATEWAY}",
        "+time=2",
        "+tries=1",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate()
    return out.decode()


@pytest.fixture
def refusing_udp_port() -> Iterator[str]:
    with refusing_port(socket.SOCK_DGRAM) as port:
        yield f"127.0.0.1:{port}"


class FakeUpstream:
    """A resolver on 127.0.0.1 (the host's namespace, unreachable from the tenant namespaces):
    answers `names`, NXDOMAIN otherwise. Per-name tricks: 'silent' never answers; 'tc' answers
    UDP with TC set and only TCP in full; 'forged' sends wrong-ID and wrong-question replies
    before the real one."""

    def __init__(self, names: dict[str, list[str]], tricks: dict[str, str] | None = None) -> None:
        self.names, self.tricks = names, tricks or {}
        self.seen: list[Message] = []
        self.port = 0
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None

    def reply(self, msg: Message, tcp: bool) -> list[bytes]:
        self.seen.append(msg)
        q = msg.questions[0]
        text = b".".join(q.name).decode().lower()
        trick = self.tricks.get(text, "")
        out = Message(id=msg.id, qr=True, rd=msg.rd, ra=True, questions=[q])
        if trick == "silent":
            return []
        if trick == "tc" and not tcp:
            out.tc = True
            return [encode(out)]
        if text in self.names:
            out.answers = [
                RR(q.name, A, CLASS_IN, 30, ipaddress.ip_address(ip).packed) for ip in self.names[text]
            ]
            out.additional = [RR(N("glue.example"), A, CLASS_IN, 30, b"\x01\x02\x03\x04")]
        else:
            out.rcode = NXDOMAIN
        replies = [encode(out)]
        if trick == "forged":
            bad_id = Message(
                id=msg.id ^ 1,
                qr=True,
                questions=[q],
                answers=[RR(q.name, A, CLASS_IN, 30, bytes([6, 6, 6, 6]))],
            )
            bad_q = Message(
                id=msg.id,
                qr=True,
                questions=[Question(N("evil.example"), A)],
                answers=[RR(N("evil.example"), A, CLASS_IN, 30, bytes([6, 6, 6, 6]))],
            )
            replies = [encode(bad_id), encode(bad_q), b"\xff" * 7, *replies]
        return replies

    async def start(self) -> FakeUpstream:
        """Listen on 127.0.0.1 for UDP and TCP on one port, as a resolver does. The kernel picks
        the UDP port; another process may hold that number for TCP, so then both are dropped and
        the kernel picks again. Nothing stays open if this fails."""
        loop = asyncio.get_running_loop()
        upstream = self

        class Udp(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
                assert upstream._udp is not None
                for r in upstream.reply(decode(data), tcp=False):
                    upstream._udp.sendto(r, addr)

        async def tcp(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
                (n,) = struct.unpack("!H", await reader.readexactly(2))
                for r in self.reply(decode(await reader.readexactly(n)), tcp=True):
                    writer.write(struct.pack("!H", len(r)) + r)
                await writer.drain()
            writer.close()

        for _ in range(50):
            transport, _ = await loop.create_datagram_endpoint(Udp, local_addr=("127.0.0.1", 0))
            self._udp = cast(asyncio.DatagramTransport, transport)
            self.port = self._udp.get_extra_info("sockname")[1]
            try:
                self._tcp = await asyncio.start_server(tcp, "127.0.0.1", self.port)
                return self
            except OSError as e:
                self._udp.close()
                self._udp = None
                if e.errno != errno.EADDRINUSE:
                    raise
        raise AssertionError("no port of 127.0.0.1 was free for both UDP and TCP in 50 tries")

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def stop(self) -> None:
        if self._udp is not None:
            self._udp.close()
        if self._tcp is not None:
            self._tcp.close()
            await self._tcp.wait_closed()


@pytest.fixture
async def upstream() -> AsyncIterator[FakeUpstream]:
    fake = await FakeUpstream(
        {"www.example.test": ["192.0.2.10", "192.0.2.11"]},
        {"slow.example.test": "silent", "big.example.test": "tc", "forged.example.test": "forged"},
    ).start()
    try:
        fake.names["big.example.test"] = [f"192.0.2.{i}" for i in range(1, 101)]
        fake.names["forged.example.test"] = ["192.0.2.99"]
        yield fake
    finally:
        await fake.stop()


@pytest.fixture
async def server(upstream: FakeUpstream) -> AsyncIterator[DnsServer]:
    srv = DnsServer(upstreams=[upstream.address], upstream_timeout=0.5)
    yield srv
    await srv.close()


async def test_fake_upstream_takes_another_port_when_tcp_finds_its_number_taken(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The fake resolver needs one port for UDP and TCP; another process may hold the UDP port's
    number for TCP ("address already in use"). It picks again and leaves nothing open behind it
    (a leaked transport fails some later test through the unraisable-exception check). A
    collision cannot be arranged on a shared machine, so the first TCP bind is made to fail."""
    real_start_server = asyncio.start_server
    refused: list[int] = []

    async def taken_once(*args: Any, **kwargs: Any) -> asyncio.Server:
        if not refused:
            refused.append(args[2])
            raise OSError(errno.EADDRINUSE, "Address already in use")
        return await real_start_server(*args, **kwargs)

    monkeypatch.setattr(asyncio, "start_server", taken_once)
    fake = await FakeUpstream({"www.example.test": ["192.0.2.10"]}).start()
    try:
        gc.collect()  # a transport left open by the failed try would warn here, failing this test
        loop = asyncio.get_running_loop()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.setblocking(False)
            await loop.sock_sendto(sock, query("www.example.test"), ("127.0.0.1", fake.port))
            reply = decode(await asyncio.wait_for(loop.sock_recv(sock, 4096), 5))
        assert refused and addresses(reply) == {"192.0.2.10"}
    finally:
        await fake.stop()


SHOP = records_for(
    [
        svc("web", "shop", "10.96.0.5", [{"name": "http", "port": 80}]),
        svc("db", "shop", "None", [{"name": "pg", "port": 5432}]),
    ],
    [
        endpoints(
            "db",
            "shop",
            [{"ip": "10.1.0.7", "hostname": "db-0"}, {"ip": "10.1.0.8", "hostname": "db-1"}],
            [{"name": "pg", "port": 5432, "protocol": "TCP"}],
        )
    ],
)
BANK = records_for([svc("vault", "bank", "10.96.0.5"), svc("web", "bank", "10.96.0.77")], [])


@needs_netns
async def test_two_networks_same_address_each_sees_only_its_own(
    server: DnsServer, make_netns: Callable[..., str]
) -> None:
    shop, bank = make_netns(), make_netns()
    server.set_records("shop", SHOP)
    server.set_records("bank", BANK)
    await server.serve_network("shop", shop, GATEWAY)
    await server.serve_network("bank", bank, GATEWAY)
    await server.serve_network("bank", bank, GATEWAY)  # idempotent
    assert addresses(await ask(shop, "web.shop.svc.cluster.local")) == {"10.96.0.5"}
    assert addresses(await ask(bank, "web.bank.svc.cluster.local")) == {"10.96.0.77"}
    for netns, name in (
        (shop, "vault.bank.svc.cluster.local"),
        (shop, "web.bank.svc.cluster.local"),
        (bank, "web.shop.svc.cluster.local"),
        (bank, "db-0.db.shop.svc.cluster.local"),
    ):
        msg = await ask(netns, name)
        assert msg.rcode == NXDOMAIN and not msg.answers and msg.authority[0].rtype == SOA
    # the same IP has a different name in each network
    ptr = await ask(bank, "5.0.96.10.in-addr.arpa", PTR)
    assert ptr.answers[0].rdata == NameData(N("vault.bank.svc.cluster.local"))
    # records change in place
    server.set_records("bank", records_for([svc("vault", "bank", "10.96.0.6")], []))
    assert addresses(await ask(bank, "vault.bank.svc.cluster.local")) == {"10.96.0.6"}
    assert (await ask(bank, "web.bank.svc.cluster.local")).rcode == NXDOMAIN
    assert (await ask(shop, "web.shop.svc.cluster.local")).rcode == NOERROR


@needs_netns
async def test_headless_srv_and_tcp(server: DnsServer, make_netns: Callable[..., str]) -> None:
    ns = make_netns()
    server.set_records("shop", SHOP)
    await server.serve_network("shop", ns, GATEWAY)
    for tcp in (False, True):
        assert addresses(await ask(ns, "db.shop.svc.cluster.local", tcp=tcp)) == {"10.1.0.7", "10.1.0.8"}
        assert addresses(await ask(ns, "db-1.db.shop.svc.cluster.local", tcp=tcp)) == {"10.1.0.8"}
        srv = await ask(ns, "_pg._tcp.db.shop.svc.cluster.local", SRV, tcp=tcp)
        assert {(r.rdata.port, r.rdata.target) for r in srv.answers if isinstance(r.rdata, SrvData)} == {
            (5432, N("db-0.db.shop.svc.cluster.local")),
            (5432, N("db-1.db.shop.svc.cluster.local")),
        }
    srv = await ask(ns, "_http._tcp.web.shop.svc.cluster.local", SRV)
    assert srv.answers[0].rdata == SrvData(0, 100, 80, N("web.shop.svc.cluster.local"))


@needs_netns
async def test_dig_in_the_namespace(
    server: DnsServer, make_netns: Callable[..., str], upstream: FakeUpstream
) -> None:
    if not shutil.which("dig"):
        pytest.skip("dig is not installed (apt-get install dnsutils)")
    ns = make_netns()
    server.set_records("shop", SHOP)
    await server.serve_network("shop", ns, GATEWAY)
    assert (await dig(ns, "+short", "web.shop.svc.cluster.local")).split() == ["10.96.0.5"]
    assert sorted((await dig(ns, "+short", "+tcp", "db.shop.svc.cluster.local")).split()) == [
        "10.1.0.7",
        "10.1.0.8",
    ]
    assert "0 50 5432 db-0.db.shop.svc.cluster.local." in await dig(
        ns, "+short", "SRV", "_pg._tcp.db.shop.svc.cluster.local"
    )
    out = await dig(ns, "nope.shop.svc.cluster.local")
    assert "status: NXDOMAIN" in out and "hostmaster.cluster.local." in out
    assert sorted((await dig(ns, "+short", "www.example.test")).split()) == ["192.0.2.10", "192.0.2.11"]
    # dig retries over TCP by itself after TC
    out = await dig(ns, "+noedns", "big.example.test")
    assert "status: NOERROR" in out and "ANSWER: 100" in out


@needs_netns
async def test_forwarding_from_the_host_namespace(
    server: DnsServer, upstream: FakeUpstream, make_netns: Callable[..., str]
) -> None:
    ns = make_netns()
    server.set_records("shop", {**SHOP, "ext.shop.svc.cluster.local": [Cname("www.example.test")]})
    await server.serve_network("shop", ns, GATEWAY)
    msg = await ask(ns, "WWW.example.test")
    assert (msg.rcode, msg.aa, msg.ra) == (NOERROR, False, True)
    assert addresses(msg) == {"192.0.2.10", "192.0.2.11"}
    assert msg.questions[0].name == (b"WWW", b"example", b"test") and not msg.additional
    sent = upstream.seen[-1]
    assert sent.questions[0].name == (b"WWW", b"example", b"test") and sent.edns is not None
    assert (await ask(ns, "nope.example.test")).rcode == NXDOMAIN
    # the upstream's forgeries and garbage are ignored; the real answer gets through
    assert addresses(await ask(ns, "forged.example.test")) == {"192.0.2.99"}
    # an upstream UDP reply with TC is retried over TCP; the client then gets TC over UDP ...
    msg = await ask(ns, "big.example.test", edns=Edns(udp_size=1232))
    assert msg.tc and not msg.answers
    # ... and everything over TCP
    assert len((await ask(ns, "big.example.test", tcp=True)).answers) == 100
    # ExternalName to a name outside the cluster: CNAME, then the upstream's answer
    msg = await ask(ns, "ext.shop.svc.cluster.local")
    assert [r.rtype for r in msg.answers] == [CNAME, A, A] and addresses(msg) == {"192.0.2.10", "192.0.2.11"}
    # nothing under cluster.local is ever forwarded
    before = len(upstream.seen)
    await ask(ns, "web.bank.svc.cluster.local")
    await ask(ns, "www.example.test.shop.svc.cluster.local")
    assert len(upstream.seen) == before


@needs_netns
async def test_upstream_timeout_and_failover(
    upstream: FakeUpstream, make_netns: Callable[..., str], refusing_udp_port: str
) -> None:
    ns = make_netns()
    # the first upstream refuses at once, the second answers
    server = DnsServer(upstreams=[refusing_udp_port, upstream.address], upstream_timeout=0.4)
    try:
        await server.serve_network("n", ns, GATEWAY)
        assert addresses(await ask(ns, "www.example.test")) == {"192.0.2.10", "192.0.2.11"}
        start = time.monotonic()
        msg = await ask(ns, "slow.example.test")
        assert msg.rcode == SERVFAIL and not msg.answers
        assert 0.3 < time.monotonic() - start < 2.0
        failures = f'hypernetes_dns_upstream_failures_total{{upstream="{refusing_udp_port}"}} '
        assert failures in server.metrics_text()
        assert failures in exposition(REGISTRY).decode()  # on the process's /metrics while serving
    finally:
        await server.close()
    assert failures not in exposition(REGISTRY).decode()  # and off it once closed


@needs_netns
async def test_garbage_does_not_hurt(server: DnsServer, make_netns: Callable[..., str]) -> None:
    ns = make_netns()
    server.set_records("shop", SHOP)
    await server.serve_network("shop", ns, GATEWAY)
    loop_pointer = bytes.fromhex("abcd01000001000000000000") + b"\xc0\x0c\x00\x01\x00\x01"
    for junk in (
        b"",
        b"\x00",
        os.urandom(11),
        os.urandom(300),
        loop_pointer,
        b"\xff" * 3000,
        query("x.cluster.local") * 3,
    ):
        reply = await exchange(ns, junk, timeout=0.3)
        if reply is not None:
            msg = decode(reply)
            assert msg.rcode in (FORMERR, NOTIMP, REFUSED) and len(reply) <= 12
    assert decode(await exchange(ns, loop_pointer, timeout=1) or b"").id == 0xABCD  # FORMERR with the ID
    # TCP: a lying length, a runt, a connection that says nothing: closed, not a crash
    assert await exchange(ns, b"\xff" * 20, tcp=True, timeout=1) is None
    loop = asyncio.get_running_loop()
    idle = run_in_netns(ns, lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM))
    idle.setblocking(False)
    with idle:
        await loop.sock_connect(idle, (GATEWAY, 53))
        await loop.sock_sendall(idle, b"\x00\x40\x00")  # promises 64 bytes, sends one
        assert addresses(await ask(ns, "web.shop.svc.cluster.local", tcp=True)) == {"10.96.0.5"}
    assert addresses(await ask(ns, "web.shop.svc.cluster.local")) == {"10.96.0.5"}
    assert not server.dropped.get(("shop", "error"))


@needs_netns
async def test_rate_limit_and_stop(upstream: FakeUpstream, make_netns: Callable[..., str]) -> None:
    ns = make_netns()
    server = DnsServer(upstreams=[upstream.address], rate=1, burst=5)
    try:
        server.set_records("shop", SHOP)
        await server.serve_network("shop", ns, GATEWAY)
        loop = asyncio.get_running_loop()
        sock = run_in_netns(ns, lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
        sock.setblocking(False)
        with sock:
            for i in range(20):
                await loop.sock_sendto(sock, query("web.shop.svc.cluster.local", qid=i), (GATEWAY, 53))
            answered = 0
            with contextlib.suppress(TimeoutError):
                while True:
                    await asyncio.wait_for(loop.sock_recv(sock, 4096), 0.5)
                    answered += 1
        assert answered == 5
        assert server.dropped[("shop", "ratelimit")] == 15
        await server.stop_network("shop")
        assert server.networks() == []
        assert await exchange(ns, query("web.shop.svc.cluster.local"), timeout=0.3) is None
        # the port is free again: another server can take it
        await server.serve_network("shop", ns, GATEWAY)
        assert (await ask(ns, "web.shop.svc.cluster.local")).rcode == NXDOMAIN  # records were forgotten
    finally:
        await server.close()


@needs_netns
async def test_serving_an_address_not_configured_yet(
    server: DnsServer, make_netns: Callable[..., str]
) -> None:
    ns = make_netns()
    server.set_records("shop", SHOP)
    await server.serve_network("shop", ns, "10.78.0.1")  # the bridge is not up yet
    _ipcmd("-n", ns, "addr", "add", "10.78.0.1/24", "dev", "gw0")
    sock = run_in_netns(ns, lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
    sock.setblocking(False)
    with sock:
        loop = asyncio.get_running_loop()
        await loop.sock_sendto(sock, query("web.shop.svc.cluster.local"), ("10.78.0.1", 53))
        msg = decode(await asyncio.wait_for(loop.sock_recv(sock, 4096), 2))
    assert addresses(msg) == {"10.96.0.5"}


@needs_netns
async def test_a_namespace_made_again_gets_new_sockets(
    server: DnsServer, make_netns: Callable[..., str]
) -> None:
    ns = make_netns()
    server.set_records("shop", SHOP)
    await server.serve_network("shop", ns, GATEWAY)
    _ipcmd("netns", "delete", ns)  # our sockets keep the old namespace alive, serving no one
    make_netns(ns)
    await server.serve_network("shop", ns, GATEWAY)
    assert addresses(await ask(ns, "web.shop.svc.cluster.local")) == {"10.96.0.5"}
