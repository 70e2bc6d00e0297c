"""CronJob schedules as upstream reads them (github.com/robfig/cron/v3 `ParseStandard`, which the
CronJob validation and controller use): five fields, minute hour day-of-month month
day-of-week, each a comma list of `*` or `?`, `N`, `N-M`, with an optional `/step` (`N/step`
runs to the field's maximum); months JAN-DEC and weekdays SUN-SAT by name (case-insensitive);
day-of-week 0-6 (Sunday is 0: robfig refuses 7). When both day fields are restricted a day
matches either (cron's rule); when either is `*` or `?`, both must match. Descriptors:
@yearly, @annually, @monthly, @weekly, @daily, @midnight, @hourly and `@every <duration>`.

Times are computed in the CronJob's zone (`spec.timeZone`, IANA; UTC when unset, as the
controller manager's local zone is UTC here), so `0 9 * * *` in Europe/Paris follows its
daylight saving time; a wall time that does not exist that day is skipped, as robfig does.
Error texts are robfig's, which upstream puts in its 422 (`spec.schedule: Invalid value: ...`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

_MONTHS = {
    m: i + 1
    for i, m in enumerate(
        ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
    )
}
_DAYS = {d: i for i, d in enumerate(("sun", "mon", "tue", "wed", "thu", "fri", "sat"))}
# (low, high, names) per field, as robfig's bounds
_FIELDS: tuple[tuple[int, int, dict[str, int]], ...] = (
    (0, 59, {}),
    (0, 23, {}),
    (1, 31, {}),
    (1, 12, _MONTHS),
    (0, 6, _DAYS),
)
_DESCRIPTORS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
# robfig gives up after five years without a match (e.g. 30 February)
_SEARCH_YEARS = 5


def _quote(text: str) -> str:
    """Go's strconv.Quote (the errors robfig/cron wraps print with it): double quotes."""
    return json.dumps(text, ensure_ascii=False)


class ScheduleError(ValueError):
    """An unparseable schedule; str(e) is robfig's message."""


def _number(text: str, names: dict[str, int]) -> int:
    if text.lower() in names:
        return names[text.lower()]
    if not text.isdigit():
        raise ScheduleError(
            f"failed to parse int from {text}: strconv.Atoi: parsing {_quote(text)}: invalid syntax"
        )
    return int(text)


def _field(text: str, low: int, high: int, names: dict[str, int]) -> tuple[frozenset[int], bool]:
    """(the values, whether the field was `*` or `?`)."""
    values: set[int] = set()
    star = False
    for part in text.split(","):
        range_text, _, step_text = part.partition("/")
        if "/" in step_text:
            raise ScheduleError(f"too many slashes: {part}")
        if range_text in ("*", "?"):
            start, end = low, high
        else:
            lo_text, dash, hi_text = range_text.partition("-")
            if "-" in hi_text:
                raise ScheduleError(f"too many hyphens: {range_text}")
            start = _number(lo_text, names)
            end = _number(hi_text, names) if dash else start
        step = 1
        if step_text:
            step = _number(step_text, {})
            if step == 0:
                raise ScheduleError(f"step of range should be a positive number: {part}")
            if range_text not in ("*", "?") and "-" not in range_text:
                end = high  # "N/step": from N to the maximum
        if range_text in ("*", "?") and step == 1:
            star = True  # robfig's star bit: day fields then combine with AND
        if start < low:
            raise ScheduleError(f"beginning of range ({start}) below minimum ({low}): {part}")
        if end > high:
            raise ScheduleError(f"end of range ({end}) above maximum ({high}): {part}")
        if start > end:
            raise ScheduleError(f"beginning of range ({start}) beyond end of range ({end}): {part}")
        values.update(range(start, end + 1, step))
    return frozenset(values), star


def _duration(text: str) -> timedelta:
    """Go's time.ParseDuration for the units a schedule uses."""
    if not text or _DURATION_PART.sub("", text) != "":
        raise ScheduleError(f"failed to parse duration @every {text}: time: invalid duration {_quote(text)}")
    seconds = sum(float(n) * _UNIT_SECONDS[u] for n, u in _DURATION_PART.findall(text))
    return timedelta(seconds=seconds)


@dataclass(frozen=True)
class Schedule:
    minutes: frozenset[int] = frozenset()
    hours: frozenset[int] = frozenset()
    days: frozenset[int] = frozenset()
    months: frozenset[int] = frozenset()
    weekdays: frozenset[int] = frozenset()
    any_day: bool = False  # day-of-month or day-of-week was * or ?: both must match
    every: timedelta | None = None  # @every: a constant delay

    def _day_matches(self, t: datetime) -> bool:
        dom = t.day in self.days
        dow = (t.isoweekday() % 7) in self.weekdays
        return dom and dow if self.any_day else dom or dow

    def next_after(self, after: datetime, zone: tzinfo = UTC) -> datetime | None:
        """The first activation strictly after `after` (aware), in `zone`; None if none within
        five years (robfig's zero time)."""
        if self.every is not None:
            # robfig: the delay rounded down to whole seconds (at least one), from `after`'s second
            delay = max(timedelta(seconds=int(self.every.total_seconds())), timedelta(seconds=1))
            return after.replace(microsecond=0) + delay
        local = after.astimezone(zone).replace(second=0, microsecond=0, tzinfo=None) + timedelta(minutes=1)
        limit = local.year + _SEARCH_YEARS
        while local.year <= limit:
            if local.month not in self.months:
                year, month = (local.year + 1, 1) if local.month == 12 else (local.year, local.month + 1)
                local = datetime(year, month, 1)
                continue
            if not self._day_matches(local):
                local = datetime(local.year, local.month, local.day) + timedelta(days=1)
                continue
            if local.hour not in self.hours:
                local = local.replace(minute=0) + timedelta(hours=1)
                continue
            if local.minute not in self.minutes:
                local += timedelta(minutes=1)
                continue
            aware = local.replace(tzinfo=zone)
            # a wall time skipped by a DST change does not exist that day: skip it
            if aware.astimezone(UTC).astimezone(zone).replace(tzinfo=None) != local:
                local += timedelta(minutes=1)
                continue
            return aware.astimezone(UTC)
        return None


def parse_schedule(text: str) -> Schedule:
    """ScheduleError with robfig's message if `text` is not a standard schedule."""
    spec = text.strip()
    if spec.startswith(("TZ=", "CRON_TZ=")):
        # robfig reads a leading zone; upstream's validation then refuses it (use spec.timeZone)
        zone_text, _, spec = spec.partition(" ")
        zone_name = zone_text.split("=", 1)[1]
        if parse_zone(zone_name) is None:
            raise ScheduleError(f"provided bad location {zone_name}: unknown time zone {zone_name}")
        spec = spec.strip()
    if spec.startswith("@"):
        if spec.startswith("@every "):
            return Schedule(every=_duration(spec[len("@every ") :].strip()))
        if spec not in _DESCRIPTORS:
            raise ScheduleError(f"unrecognized descriptor: {spec}")
        spec = _DESCRIPTORS[spec]
    parts = spec.split()
    if len(parts) != 5:
        raise ScheduleError(f"expected exactly 5 fields, found {len(parts)}: [{' '.join(parts)}]")
    fields = [_field(p, lo, hi, names) for p, (lo, hi, names) in zip(parts, _FIELDS, strict=True)]
    return Schedule(
        minutes=fields[0][0],
        hours=fields[1][0],
        days=fields[2][0],
        months=fields[3][0],
        weekdays=fields[4][0],
        any_day=fields[2][1] or fields[4][1],
    )


def parse_zone(name: str) -> tzinfo | None:
    """An IANA zone (Go's time.LoadLocation: "UTC" and "" are UTC), or None if unknown."""
    if name in ("", "UTC"):
        return UTC
    if name.startswith("/") or ".." in name or name.strip() != name:
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None
