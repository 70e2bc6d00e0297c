"""Password guessing is slowed where it comes from, never by locking the account it aims at.

Three limits, all in memory (per API server process; docs/tenants.md, "Logins"):

- per (source address, user name): `PAIR_FREE` failures, then each further attempt from there
  waits 1 s, 2 s, 4 s ... up to `MAX_BACKOFF`; failures are forgotten at one per `PAIR_DECAY`
  seconds, and all of them at a success. A victim elsewhere is untouched by it.
- per source address, across user names (spraying one password over many users): the same with
  `SOURCE_FREE` failures and `SOURCE_DECAY`; one attempt at a time per (source, user).
- per user name, across sources (a botnet): a bucket of `USER_BURST` guesses refilled at one per
  `USER_REFILL` seconds. A guess takes a token before its password is checked (so parallel guesses
  cannot outrun it) and a correct one gives it back: only failures cost. An empty bucket *delays*
  the attempt rather than refusing it: the source gets a reserved turn (its token, `retry_after`
  seconds ahead, at most `MAX_DELAY`) and is asked to come back then (429 with Retry-After, which
  `hypernetes login` honours); the request itself is not held, so waiting guesses occupy no server
  capacity. One turn per (source, user), so every source queues once, the victim's too. Sources
  the user logged in from before skip the bucket: the rightful user at a known address is never
  slowed by someone else's guesses.

Every name is treated alike whether or not such a user exists, so the throttle tells nothing
about which names are real.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

PAIR_FREE, PAIR_DECAY = 5, 60.0
SOURCE_FREE, SOURCE_DECAY = 30, 20.0
MAX_BACKOFF = 300.0
USER_BURST, USER_REFILL = 20, 3.0
MAX_DELAY = 15.0
KNOWN_PER_USER = 16  # remembered sources of successful logins, per user
MAX_ENTRIES = 100_000  # per table; the least recently used go first


class Throttled(Exception):
    def __init__(self, retry_after: float, why: str) -> None:
        super().__init__(why)
        self.retry_after = max(1, int(retry_after + 0.999))


@dataclass
class _Backoff:
    failures: float = 0.0
    last: float = 0.0

    def decayed(self, now: float, decay: float) -> float:
        """Failures not yet forgotten: whole ones, one per `decay` seconds since the last."""
        return max(0.0, self.failures - math.floor((now - self.last) / decay))

    def wait(self, now: float, free: int, decay: float) -> float:
        n = self.decayed(now, decay)
        if n < free:
            return 0.0
        return max(0.0, self.last + min(float(2.0 ** (n - free)), MAX_BACKOFF) - now)

    def fail(self, now: float, decay: float) -> None:
        self.failures = self.decayed(now, decay) + 1
        self.last = now


@dataclass
class _Bucket:
    tokens: float
    at: float

    def reserve(self, now: float) -> float:
        """Take a token (the balance may go below zero: a queue); seconds until it is ours."""
        self.tokens = min(float(USER_BURST), self.tokens + (now - self.at) / USER_REFILL)
        self.at = now
        self.tokens -= 1
        return max(0.0, -self.tokens * USER_REFILL)

    def wait_for_next(self, now: float) -> float:
        tokens = min(float(USER_BURST), self.tokens + (now - self.at) / USER_REFILL)
        return max(0.0, (1 - tokens) * USER_REFILL)


K = TypeVar("K")
V = TypeVar("V")


class _Lru(OrderedDict[K, V]):
    def touch(self, key: K, make: Callable[[], V]) -> V:
        value = self.get(key)
        if value is None:
            value = self[key] = make()
            while len(self) > MAX_ENTRIES:
                self.popitem(last=False)
        else:
            self.move_to_end(key)
        return value


@dataclass
class Attempt:
    source: str
    user: str
    taken: bool  # a token of the user's bucket was taken
    done: bool = field(default=False)


class LoginThrottle:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._pairs: _Lru[tuple[str, str], _Backoff] = _Lru()
        self._sources: _Lru[str, _Backoff] = _Lru()
        self._users: _Lru[str, _Bucket] = _Lru()
        self._turns: _Lru[tuple[str, str], float] = _Lru()  # (source, user) -> when its token is ready
        self._known: _Lru[str, list[str]] = _Lru()
        self._inflight: set[tuple[str, str]] = set()

    def begin(self, source: str, user: str) -> Attempt:
        """This attempt may check its password now; Throttled (come back later) otherwise."""
        now = self._clock()
        pair = self._pairs.get((source, user))
        wait = max(
            pair.wait(now, PAIR_FREE, PAIR_DECAY) if pair else 0.0,
            src.wait(now, SOURCE_FREE, SOURCE_DECAY) if (src := self._sources.get(source)) else 0.0,
        )
        if wait > 0:
            raise Throttled(wait, "too many failed logins from this address")
        if (source, user) in self._inflight:
            raise Throttled(1, "a login for this user from this address is already in progress")
        taken = source not in self._known.get(user, ())
        if taken:
            self._take_turn(source, user, now)
        self._inflight.add((source, user))
        return Attempt(source, user, taken)

    def _take_turn(self, source: str, user: str, now: float) -> None:
        """Take a token of the user's bucket for this source, or reserve its turn and raise."""
        turn = self._turns.get((source, user))
        if turn is not None:
            if now < turn:
                raise Throttled(turn - now, "login delayed: too many failed logins for this user")
            del self._turns[(source, user)]  # its reserved token is taken: go on
            return
        bucket = self._users.touch(user, lambda: _Bucket(float(USER_BURST), now))
        ahead = bucket.wait_for_next(now)
        if ahead > MAX_DELAY:  # the queue is full: no turn reserved
            raise Throttled(ahead - MAX_DELAY, "too many failed logins for this user; try again later")
        ready = bucket.reserve(now)
        if ready > 0:
            self._turns.touch((source, user), lambda: now + ready)
            raise Throttled(ready, "login delayed: too many failed logins for this user")

    def end(self, attempt: Attempt, ok: bool | None) -> None:
        """The attempt's result: True (logged in), False (wrong), None (not decided: give back)."""
        if attempt.done:
            return
        attempt.done = True
        self._inflight.discard((attempt.source, attempt.user))
        now = self._clock()
        if attempt.taken and ok is not False and (bucket := self._users.get(attempt.user)) is not None:
            bucket.tokens = min(float(USER_BURST), bucket.tokens + 1)  # only failures cost
        if ok:
            self._pairs.pop((attempt.source, attempt.user), None)
            known = self._known.touch(attempt.user, list)
            if attempt.source not in known:
                known.append(attempt.source)
                del known[:-KNOWN_PER_USER]
        elif ok is False:
            self._pairs.touch((attempt.source, attempt.user), _Backoff).fail(now, PAIR_DECAY)
            self._sources.touch(attempt.source, _Backoff).fail(now, SOURCE_DECAY)
