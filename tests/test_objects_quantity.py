"""hypernetes.objects.quantity against upstream: the cases of k8s.io/apimachinery's
pkg/api/resource/quantity_test.go, and the real kubectl (which parses and prints quantities with
that package) as an oracle for canonical strings."""

from __future__ import annotations

import json
import subprocess
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hypernetes.objects.quantity import (
    FORMAT_ERROR,
    SUFFIX_ERROR,
    Format,
    Quantity,
    QuantityError,
    canonical_quantity,
    format_bytes,
    quantity_milli_value,
    quantity_value,
)
from tests.support.apifixtures import have_kubectl
from tests.support.apiserver import kubectl_path

D, B, X = Format.DECIMAL_SI, Format.BINARY_SI, Format.DECIMAL_EXPONENT
Ki, Mi, Gi, Ti, Pi, Ei = (1024**n for n in range(1, 7))

# TestQuantityParse: input -> (value, format)
PARSE = [
    ("0", 0, D),
    ("0n", 0, D),
    ("0u", 0, D),
    ("0m", 0, D),
    ("0Ki", 0, B),
    ("0k", 0, D),
    ("0Mi", 0, B),
    ("0M", 0, D),
    ("0Gi", 0, B),
    ("0G", 0, D),
    ("0Ti", 0, B),
    ("0T", 0, D),
    ("1", 1, D),
    ("1Ki", Ki, B),
    ("8Ki", 8 * Ki, B),
    ("7Mi", 7 * Mi, B),
    ("6Gi", 6 * Gi, B),
    ("5Ti", 5 * Ti, B),
    ("4Pi", 4 * Pi, B),
    ("3Ei", 3 * Ei, B),
    ("10Ti", 10 * Ti, B),
    ("100Ti", 100 * Ti, B),
    ("5n", Decimal("5e-9"), D),
    ("4u", Decimal("4e-6"), D),
    ("3m", Decimal("0.003"), D),
    ("9", 9, D),
    ("8k", 8000, D),
    ("50k", 50000, D),
    ("7M", 7 * 10**6, D),
    ("6G", 6 * 10**9, D),
    ("5T", 5 * 10**12, D),
    ("40T", 4 * 10**13, D),
    ("300T", 3 * 10**14, D),
    ("2P", 2 * 10**15, D),
    ("1E", 10**18, D),
    ("1E-3", Decimal("0.001"), X),
    ("1e3", 1000, X),
    ("1E6", 10**6, X),
    ("1e9", 10**9, X),
    ("1E12", 10**12, X),
    ("1e15", 10**15, X),
    ("1E18", 10**18, X),
    ("1e14", 10**14, X),
    ("1e13", 10**13, X),
    ("100.035k", 100035, D),
    ("0.001", Decimal("0.001"), D),
    ("0.0005k", Decimal("0.5"), D),
    ("0.005", Decimal("0.005"), D),
    ("0.05", Decimal("0.05"), D),
    ("0.5", Decimal("0.5"), D),
    ("0.00050k", Decimal("0.5"), D),
    ("0.00500", Decimal("0.005"), D),
    ("0.05000", Decimal("0.05"), D),
    ("0.50000", Decimal("0.5"), D),
    ("0.5e0", Decimal("0.5"), X),
    ("0.5e-1", Decimal("0.05"), X),
    ("0.5e-2", Decimal("0.005"), X),
    ("10.035M", 10035000, D),
    ("1.2e3", 1200, X),
    ("1.3E+6", 1300000, X),
    ("1.40e9", 1400000000, X),
    ("1.53E12", 153 * 10**10, X),
    ("1.6e15", 16 * 10**14, X),
    ("1.7E18", 17 * 10**17, X),
    ("9.01", Decimal("9.01"), D),
    ("8.1k", 8100, D),
    ("7.123456M", 7123456, D),
    ("6.987654321G", 6987654321, D),
    ("5.444T", 5444 * 10**9, D),
    ("40.1T", 401 * 10**11, D),
    ("300.2T", 3002 * 10**11, D),
    ("2.5P", 25 * 10**14, D),
    ("1.01E", 101 * 10**16, D),
    # things that saturate or round (up, to nano units)
    ("3.001n", Decimal("4e-9"), D),
    ("1.1E-9", Decimal("2e-9"), X),
    ("0.0000000001", Decimal("1e-9"), D),
    ("0.0000000005", Decimal("1e-9"), D),
    ("0.00000000050", Decimal("1e-9"), D),
    ("0.5e-9", Decimal("1e-9"), X),
    ("0.9n", Decimal("1e-9"), D),
    ("0.00000012345", Decimal("124e-9"), D),
    ("0.00000012354", Decimal("124e-9"), D),
    ("9Ei", 2**63 - 1, B),
    ("9223372036854775807Ki", 2**63 - 1, B),
    ("12E", 12 * 10**18, D),
    # fractional binary
    ("100.035Ki", Decimal("102435.84"), B),
    ("0.5Mi", 512 * Ki, B),
    ("0.05Gi", Decimal("53687091.2"), B),
    ("0.025Ti", Decimal("27487790694.4"), B),
    # "things written by trolls"
    ("0.000000000001Ki", Decimal("2e-9"), D),
    (".001", Decimal("0.001"), D),
    (".0001k", Decimal("0.1"), D),
    ("1.", 1, D),
    ("1.G", 10**9, D),
]


@pytest.mark.parametrize(("text", "value", "fmt"), PARSE)
def test_parse_as_upstream(text: str, value: int | Decimal, fmt: Format) -> None:
    for sign, prefix in ((1, ""), (-1, "-"), (1, "+")):
        q = Quantity.parse(prefix + text)
        assert q.amount == sign * Decimal(value), prefix + text
        assert q.format is fmt, prefix + text


@pytest.mark.parametrize(
    "text", ["1.1.M", "1+1.0M", "0.1mi", "0.1am", "aoeu", ".5i", "1i", "-3.01i", "-3.01e-", " 1", "1 ", ""]
)
def test_invalid_as_upstream(text: str) -> None:
    with pytest.raises(QuantityError):
        Quantity.parse(text)


def test_errors_carry_upstream_messages() -> None:
    with pytest.raises(QuantityError, match="regular expression"):
        Quantity.parse("1.1.M")
    with pytest.raises(QuantityError) as err:
        Quantity.parse("1K")  # only k is kilo; K is not a suffix
    assert str(err.value) == SUFFIX_ERROR
    assert FORMAT_ERROR.startswith("quantities must match")


# TestQuantityString: (value, format) -> canonical, and an alternate spelling of it
STRINGS = [
    (Gi, B, "1Gi", "1024Mi"),
    (300 * Mi, B, "300Mi", "307200Ki"),
    (6 * Ki, B, "6Ki", ""),
    (1001 * Gi, B, "1001Gi", "1025024Mi"),
    (Ti, B, "1Ti", "1024Gi"),
    (5, B, "5", "5000m"),
    (Decimal("0.5"), B, "500m", "0.5"),
    (10**9, D, "1G", "1000M"),
    (10**9, D, "1G", "0.001T"),
    (Decimal("0.001"), D, "1m", "1000u"),
    (Decimal("0.08"), D, "80m", ""),
    (Decimal("1.08"), D, "1080m", "1.08"),
    (3 * 10**8, D, "300M", ""),
    (10**12, D, "1T", ""),
    (1234567 * 10**6, D, "1234567M", ""),
    (Decimal("1234.567"), B, "1234567m", ""),
    (3000, D, "3k", ""),
    (1025, B, "1025", ""),
    (0, D, "0", ""),
    (0, B, "0", ""),
    (10**9, X, "1e9", ".001e12"),
    (Decimal("0.001"), X, "1e-3", "0.001e0"),
    (Decimal("1e-9"), X, "1e-9", "1000e-12"),
    (Decimal("0.08"), X, "80e-3", ""),
    (3 * 10**8, X, "300e6", ""),
    (10**12, X, "1e12", ""),
    (1000, X, "1e3", ""),
    (3000, X, "3e3", ""),
    (0, X, "0", "00"),
    (Decimal("1e-9"), D, "1n", ""),
    (Decimal("80e-9"), D, "80n", ""),
    (Decimal("1080e-9"), D, "1080n", ""),
    (Decimal("1e-6"), D, "1u", ""),
    (Decimal("80e-6"), D, "80u", ""),
    (Decimal("1080e-6"), D, "1080u", ""),
]


@pytest.mark.parametrize(("value", "fmt", "canonical", "alternate"), STRINGS)
def test_canonical_string_as_upstream(
    value: int | Decimal, fmt: Format, canonical: str, alternate: str
) -> None:
    assert str(Quantity(Decimal(value), fmt)) == canonical
    assert str(Quantity.parse(canonical)) == canonical
    if alternate:
        assert str(Quantity.parse(alternate)) == canonical
    if value:
        assert str(Quantity(-Decimal(value), fmt)) == "-" + canonical


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        # TestQuantityParseEmit
        ("1Ki", "1Ki"),
        ("1Mi", "1Mi"),
        ("1Gi", "1Gi"),
        ("1024Mi", "1Gi"),
        ("1000M", "1G"),
        (".001Ki", "1024m"),
        (".000001Ki", "1024u"),
        (".000000001Ki", "1024n"),
        (".000000000001Ki", "2n"),
        # TestParseQuantity (at and past int64)
        ("999999999999999999.1", "999999999999999999100m"),
        ("1000000000000000000", "1E"),
        ("1.0E", "1E"),
        ("10000000000000000000", "10E"),
        ("10000000000000000000000m", "10E"),
        ("9223372036854775807.1", "9223372036854775807100m"),
        ("1.000000000000000001E", "1000000000000000001"),
        # upstream keeps a text that is canonical but for a sign, leading zeros or an E exponent
        ("+1", "+1"),
        ("012", "012"),
        ("1E3", "1E3"),
        ("1e3", "1e3"),
        ("1.", "1."),
        # and prints the zero of every empty numeral as 0
        (".", "0"),
        ("-", "0"),
        ("Mi", "0"),
    ],
)
def test_parse_and_print(text: str, canonical: str) -> None:
    assert str(Quantity.parse(text)) == canonical


def test_past_exa_keeps_its_value() -> None:
    """Where upstream prints `1000E` as `1` (no suffix for 10^21), the value is kept."""
    assert str(Quantity.parse("1000E")) == "1000E"
    assert Quantity.parse(str(Quantity.parse("1000E"))) == Quantity.parse("1e21")


def test_json_values() -> None:
    """JSON strings are trimmed as upstream's UnmarshalJSON; numbers are quantities too."""
    assert canonical_quantity(" 1 ") == "1" and canonical_quantity(-1) == "-1"
    assert canonical_quantity(1.5) == "1500m" and canonical_quantity(1024) == "1024"
    for bad in (True, None, [], {}):
        with pytest.raises(QuantityError):
            Quantity.from_json(bad)


@pytest.mark.parametrize(
    ("text", "value", "milli"),
    [
        ("512m", 1, 512),
        ("1k", 1000, 1000000),
        ("1Ki", 1024, 1024000),
        ("0.5", 1, 500),
        ("1.0001", 2, 1001),
        ("1n", 1, 1),
        ("128Mi", 128 * Mi, 128 * Mi * 1000),
        ("0", 0, 0),
        ("-1.5", -2, -1500),
        ("9.01", 10, 9010),
    ],
)
def test_value_and_milli_value_round_up_away_from_zero(text: str, value: int, milli: int) -> None:
    """Value() and MilliValue(): whole units and thousandths, rounded up (`512m` of memory is
    1 byte, not docker's 512 MiB; `1k` is 1000)."""
    assert quantity_value(text) == value
    assert quantity_milli_value(text) == milli


def test_scaled_value_as_upstream() -> None:
    # TestScaledValue: 1 at one scale read at another
    for from_scale, to_scale, expected in (
        (-9, -9, 1),
        (-9, -6, 1),
        (-9, -3, 1),
        (-9, 0, 1),
        (-6, -9, 1000),
        (-3, -9, 10**6),
        (0, -9, 10**9),
        (0, -3, 1000),
        (0, 0, 1),
        (2, -2, 10**4),
    ):
        assert Quantity(Decimal(1).scaleb(from_scale)).scaled_value(to_scale) == expected


def test_values_past_int64_are_refused_not_built() -> None:
    """A quantity may be astronomically large; reading it as an integer fails fast."""
    q = Quantity.parse("1e1000000000")
    assert str(q) == "10e999999999"
    with pytest.raises(QuantityError, match="too large"):
        q.value()
    with pytest.raises(QuantityError):  # an exponent past int32 (upstream would wrap it around)
        Quantity.parse("1e" + "9" * 5000)


def test_comparison_is_by_value() -> None:
    # TestQuantityCmp
    assert Quantity.parse("100m") > Quantity.parse("50m")
    assert Quantity.parse("10000T") > Quantity.parse("100Gi")
    assert Quantity.parse("1Gi") == Quantity.parse("1024Mi") and Quantity.parse("0") == Quantity.parse("0Ki")
    assert len({Quantity.parse("1k"), Quantity.parse("1000"), Quantity.parse("1e3")}) == 1


def test_format_bytes_is_binary_canonical() -> None:
    assert [format_bytes(n) for n in (0, 1000, 1024, 1536 * Mi, 5 * Gi, Ti, 10**9)] == [
        "0",
        "1k",  # below 1Ki a binary quantity prints in decimal, as upstream
        "1Ki",
        "1536Mi",
        "5Gi",
        "1Ti",
        "1000000000",
    ]


@settings(max_examples=300, deadline=None)
@given(
    st.integers(0, 10**15),
    st.integers(0, 6),
    st.sampled_from(
        ["", "n", "u", "m", "k", "M", "G", "T", "P", "E", "Ki", "Mi", "Gi", "Ti", "e3", "e-2", "E5"]
    ),
)
def test_canonical_round_trips(n: int, frac: int, suffix: str) -> None:
    digits = str(n)
    text = (digits[:-frac] or "0") + "." + digits[-frac:] + suffix if frac else digits + suffix
    q = Quantity.parse(text)
    again = Quantity.parse(str(q))
    assert again == q and str(again) == str(q)


# -- the real kubectl as oracle ----------------------------------------------------------------

ORACLE = [
    "512m",
    "1k",
    "1Ki",
    "1024Mi",
    "1000M",
    "1.5Gi",
    "0.5",
    "100.035Ki",
    "1e3",
    "1E3",
    "1.2e3",
    "+1",
    "012",
    "1.",
    "1.G",
    ".",
    "-",
    "Mi",
    "0.000000000001Ki",
    "9Ei",
    "12E",
    "1.5e-1000",
    "-1.5",
    "0.1",
    "1500m",
    "1080000000n",
    "0.001e0",
    "5000u",
    "1025Ki",
    "8Ki",
    "3.001n",
    "7.123456M",
    "1.7E18",
]


@pytest.mark.skipif(not have_kubectl(), reason="kubectl 1.32 is not installed")
def test_canonical_strings_match_kubectl(tmp_path: Path) -> None:
    """kubectl set resources --local parses and re-serialises each quantity with upstream's code."""
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p"},
        "spec": {"containers": [{"name": "c", "image": "x"}]},
    }
    (tmp_path / "pod.json").write_text(json.dumps(pod))
    resources = ("cpu", "memory", "ephemeral-storage")
    for i in range(0, len(ORACLE), 6):
        batch = ORACLE[i : i + 6]
        limits, requests = batch[:3], batch[3:]
        args = [
            str(kubectl_path("1.32")),
            "set",
            "resources",
            "-f",
            str(tmp_path / "pod.json"),
            "--local",
            "-o",
            "json",
        ]
        args.append("--limits=" + ",".join(f"{r}={q}" for r, q in zip(resources, limits, strict=False)))
        if requests:
            args.append(
                "--requests=" + ",".join(f"{r}={q}" for r, q in zip(resources, requests, strict=False))
            )
        out = json.loads(subprocess.run(args, capture_output=True, text=True, check=True).stdout)
        got = out["spec"]["containers"][0]["resources"]
        for section, texts in (("limits", limits), ("requests", requests)):
            for r, text in zip(resources, texts, strict=False):
                assert str(Quantity.parse(text)) == got[section][r], (text, got[section][r])
