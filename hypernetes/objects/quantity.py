"""Kubernetes resource quantities, as k8s.io/apimachinery/pkg/api/resource reads and writes them.

    <quantity>  ::= <sign><digits>[.<digits>]<suffix>     ("", "+1", ".5", "1." and even "-" parse)
    <suffix>    ::= Ki | Mi | Gi | Ti | Pi | Ei            (BinarySI: powers of 1024)
                  | n | u | m | "" | k | M | G | T | P | E  (DecimalSI: powers of 1000)
                  | e<int> | E<int>                        (DecimalExponent)

`m` is milli (`512m` of memory is 0.512 bytes, not docker's MiB), `k` is 1000, `K` and `Gb` are
not quantities. Values are exact decimals rounded up (away from zero) to nano units; a BinarySI
value above 2^63-1 is capped there; a BinarySI value between 0 and 1 becomes DecimalSI. The
canonical string keeps the suffix family: `1024Mi` -> `1Gi`, `1000M` -> `1G`, `0.5` -> `500m`,
`1e3` -> `1e3`; like upstream, a string that is already canonical modulo a `+` sign, leading
zeros or an `E` exponent is echoed as written. `value()` and `milli_value()` round up away from
zero, as upstream's Value() and MilliValue().

One deliberate difference: a DecimalSI value of 10^21 or more prints with the `E` suffix
(`1000E`); upstream drops the exponent it has no suffix for and prints `1`.
"""

from __future__ import annotations

import decimal
import functools
from decimal import Decimal
from enum import StrEnum
from typing import Any


class Format(StrEnum):
    DECIMAL_SI = "DecimalSI"
    BINARY_SI = "BinarySI"
    DECIMAL_EXPONENT = "DecimalExponent"


# upstream's error messages (ErrFormatWrong, ErrNumeric, ErrSuffix)
FORMAT_ERROR = "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"
NUMERIC_ERROR = "unable to parse numeric part of quantity"
SUFFIX_ERROR = "unable to parse quantity's suffix"


class QuantityError(ValueError):
    """Not a Kubernetes quantity (the message is upstream's)."""


_BINARY = {"Ki": 10, "Mi": 20, "Gi": 30, "Ti": 40, "Pi": 50, "Ei": 60}
_DECIMAL = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}
_BINARY_SUFFIX = {e // 10: s for s, e in _BINARY.items()}
_DECIMAL_SUFFIX = {e: s for s, e in _DECIMAL.items()}
_SUFFIX_CHARS = frozenset("eEinumkKMGTP")
_DIGITS = frozenset("0123456789")
MAX_INT64 = 2**63 - 1
_INT32 = 2**31
_NANO = Decimal("1e-9")
# exact arithmetic: no rounding but the nano rounding we ask for
_CTX = decimal.Context(
    prec=decimal.MAX_PREC, Emax=decimal.MAX_EMAX, Emin=decimal.MIN_EMIN, traps=[decimal.InvalidOperation]
)


def _split(text: str) -> tuple[bool, str, str, str]:
    """(positive, numerator, denominator, suffix), as upstream's parseQuantityString."""
    positive, pos, end = True, 0, len(text)
    if pos < end and text[0] in "+-":
        positive = text[0] == "+"
        pos += 1
    while pos < end and text[pos] == "0":
        pos += 1
    if pos >= end:
        return positive, "0", "", ""
    start = pos
    while pos < end and text[pos] in _DIGITS:
        pos += 1
    num = text[start:pos] or "0"
    denom = ""
    if pos < end and text[pos] == ".":
        pos += 1
        start = pos
        while pos < end and text[pos] in _DIGITS:
            pos += 1
        denom = text[start:pos]  # may be empty: "1." and "1.G" parse, as upstream
    suffix_start = pos
    while pos < end and text[pos] in _SUFFIX_CHARS:
        pos += 1
    if pos < end and text[pos] in "+-":
        pos += 1
    while pos < end and text[pos] in _DIGITS:
        pos += 1
    if pos < end:
        raise QuantityError(FORMAT_ERROR)
    return positive, num, denom, text[suffix_start:]


def _interpret(suffix: str) -> tuple[int, int, Format]:
    """(base, exponent, format) of a suffix."""
    if suffix in _DECIMAL:
        return 10, _DECIMAL[suffix], Format.DECIMAL_SI
    if suffix in _BINARY:
        return 2, _BINARY[suffix], Format.BINARY_SI
    if len(suffix) > 1 and suffix[0] in "eE":
        digits = suffix[1:].removeprefix("+").removeprefix("-")
        if 0 < len(digits) <= 10 and all(c in _DIGITS for c in digits):  # int32 has 10 digits
            exponent = int(suffix[1:])
            if -_INT32 <= exponent < _INT32:
                return 10, exponent, Format.DECIMAL_EXPONENT
    raise QuantityError(SUFFIX_ERROR)


def _kept_text(num: str, denom: str, exponent: int, fmt: Format) -> bool:
    """Whether upstream keeps the text as written (its int64 fast path with a canonical-looking
    mantissa): what `String()` and the JSON encoding then return."""
    if fmt is Format.BINARY_SI:
        if denom or 15 - len(num) - exponent * 3 // 10 - 1 < 0:
            return False
        return int(num) & 7 != 0
    scale = exponent - len(denom)
    shifted = num + denom
    if 18 - len(shifted) < 0 or scale < -9:
        return False
    return scale % 3 == 0 and not shifted.endswith("000") and shifted[0] != "0"


def _exponent(d: Decimal) -> int:
    exp = d.as_tuple().exponent
    assert isinstance(exp, int)  # finite: parsing makes no NaN or infinity
    return exp


@functools.total_ordering
class Quantity:
    """An exact quantity, its format (which suffix family it prints in), and the text upstream
    would echo. Equal and ordered by value only: `Quantity.parse("1Gi") == Quantity.parse("1024Mi")`."""

    __slots__ = ("_text", "amount", "format")

    def __init__(self, amount: Decimal | int, fmt: Format = Format.DECIMAL_SI, *, text: str = "") -> None:
        self.amount = amount if isinstance(amount, Decimal) else Decimal(amount)
        self.format = fmt
        self._text = text

    @classmethod
    def parse(cls, text: str) -> Quantity:
        """Upstream's ParseQuantity: no surrounding whitespace. QuantityError if invalid."""
        if not text:
            raise QuantityError(FORMAT_ERROR)
        if text == "0":
            return cls(Decimal(0), Format.DECIMAL_SI, text="0")
        positive, num, denom, suffix = _split(text)
        base, exponent, fmt = _interpret(suffix)
        kept = text if _kept_text(num, denom, exponent, fmt) else ""
        number = _CTX.create_decimal(f"{num}.{denom}" if denom else num)
        amount = _CTX.multiply(number, 1 << exponent) if base == 2 else _CTX.scaleb(number, exponent)
        if amount and _exponent(amount) < -9:
            # the smallest amount is a nano: a non-zero request never becomes zero
            amount = amount.quantize(_NANO, rounding=decimal.ROUND_UP, context=_CTX)
        if fmt is Format.BINARY_SI and amount > MAX_INT64:
            amount = Decimal(MAX_INT64)
        if fmt is Format.BINARY_SI and 0 < amount < 1:
            fmt = Format.DECIMAL_SI
        return cls(amount if positive else amount.copy_negate(), fmt, text=kept)

    @classmethod
    def from_json(cls, value: Any) -> Quantity:
        """A quantity as it arrives in a JSON body: a string (surrounding whitespace ignored, as
        upstream's UnmarshalJSON) or a number. QuantityError if invalid."""
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise QuantityError(FORMAT_ERROR)
        text = repr(value).replace("e+", "e") if isinstance(value, float) else str(value).strip()
        return cls.parse(text)

    # -- reading -------------------------------------------------------------------------------

    def scaled_value(self, scale: int) -> int:
        """The value in units of 10^scale, rounded up away from zero (upstream's ScaledValue).
        QuantityError past int64, where upstream would overflow."""
        scaled = _CTX.scaleb(self.amount, -scale)
        whole = scaled.to_integral_value(rounding=decimal.ROUND_UP, context=_CTX)
        if whole.copy_abs() > MAX_INT64:
            raise QuantityError(f"quantity {self} is too large")
        return int(whole)

    def value(self) -> int:
        """Whole units, rounded up: bytes of memory or storage (upstream's Value())."""
        return self.scaled_value(0)

    def milli_value(self) -> int:
        """Thousandths, rounded up: millicores of CPU (upstream's MilliValue())."""
        return self.scaled_value(-3)

    def is_zero(self) -> bool:
        return not self.amount

    def sign(self) -> int:
        return (self.amount > 0) - (self.amount < 0)

    # -- writing -------------------------------------------------------------------------------

    def __str__(self) -> str:
        return self._text or self.canonical()

    def canonical(self) -> str:
        """Upstream's CanonicalizeBytes: the shortest form in the quantity's suffix family."""
        if not self.amount:
            return "0"
        fmt = self.format
        if fmt is Format.BINARY_SI and (
            -1024 < self.amount < 1024 or self.amount != self.amount.to_integral_value(context=_CTX)
        ):
            fmt = Format.DECIMAL_SI  # small or fractional binary values print in decimal
        sign = "-" if self.amount < 0 else ""
        if fmt is Format.BINARY_SI:
            n, power = int(self.amount.copy_abs()), 0
            while n >= 1024 and n % 1024 == 0:
                n, power = n // 1024, power + 1
            return f"{sign}{n}{_BINARY_SUFFIX.get(power, '')}"
        digits = "".join(map(str, self.amount.as_tuple().digits))
        # digits as text: a quantity may have more digits than int() converts
        mantissa = digits.rstrip("0")
        exp = _exponent(self.amount) + len(digits) - len(mantissa)
        pad = exp % 3  # the exponent becomes a multiple of 3, the mantissa takes the zeros
        mantissa, exp = mantissa + "0" * pad, exp - pad
        if fmt is Format.DECIMAL_EXPONENT:
            return f"{sign}{mantissa}" + (f"e{exp}" if exp else "")
        if exp > 18:
            mantissa, exp = mantissa + "0" * (exp - 18), 18
        return f"{sign}{mantissa}{_DECIMAL_SUFFIX[exp]}"

    def __repr__(self) -> str:
        return f"Quantity({str(self)!r}, {self.format.value})"

    # -- comparing -----------------------------------------------------------------------------

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Quantity):
            return NotImplemented
        return self.amount == other.amount

    def __lt__(self, other: Quantity) -> bool:
        return self.amount < other.amount

    def __hash__(self) -> int:
        return hash(self.amount)


def parse_quantity(value: Any) -> Quantity:
    """A quantity from a JSON value (see Quantity.from_json). QuantityError if invalid."""
    return Quantity.from_json(value)


def canonical_quantity(value: Any) -> str:
    """The string upstream serialises a JSON quantity value as: `1024Mi` -> `1Gi`."""
    return str(Quantity.from_json(value))


def quantity_value(value: Any) -> int:
    """A JSON quantity in whole units (bytes), rounded up. QuantityError if invalid."""
    return Quantity.from_json(value).value()


def quantity_milli_value(value: Any) -> int:
    """A JSON quantity in thousandths (millicores), rounded up. QuantityError if invalid."""
    return Quantity.from_json(value).milli_value()


def format_bytes(amount: int) -> str:
    """Bytes as the canonical BinarySI quantity: 5Gi, 1536Mi, 1000000000 (upstream's
    NewQuantity(n, BinarySI).String())."""
    return Quantity(amount, Format.BINARY_SI).canonical()
