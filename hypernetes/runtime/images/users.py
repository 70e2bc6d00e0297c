"""Users and groups of an image, read from its /etc/passwd and /etc/group at build time.

The runtime needs numeric ids before the VM boots, and the erofs disk is opaque to the host, so
the two files are parsed once while the rootfs is still unpacked and kept in the image's meta.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .errors import UnknownUser

MAX_ID = 2**32 - 2  # (uid_t)-1 means "no change" to the kernel


@dataclass(frozen=True)
class PasswdEntry:
    name: str
    uid: int
    gid: int
    home: str = "/"


@dataclass(frozen=True)
class GroupEntry:
    name: str
    gid: int
    members: tuple[str, ...] = ()


@dataclass(frozen=True)
class UserDb:
    users: tuple[PasswdEntry, ...] = ()
    groups: tuple[GroupEntry, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "passwd": [[u.name, u.uid, u.gid, u.home] for u in self.users],
            "group": [[g.name, g.gid, list(g.members)] for g in self.groups],
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> UserDb:
        return cls(
            tuple(PasswdEntry(str(n), int(u), int(g), str(h)) for n, u, g, h in doc["passwd"]),
            tuple(GroupEntry(str(n), int(g), tuple(map(str, m))) for n, g, m in doc["group"]),
        )

    @classmethod
    def parse(cls, passwd: bytes | None, group: bytes | None) -> UserDb:
        return cls(_parse_passwd(passwd or b""), _parse_group(group or b""))


def _id(text: str) -> int | None:
    if not text.isdigit():
        return None
    value = int(text)
    return value if value <= MAX_ID else None


def _lines(data: bytes) -> list[list[str]]:
    out = []
    for raw in data.decode("utf-8", "replace").splitlines():
        if raw and not raw.startswith(("#", "+", "-")):
            out.append(raw.split(":"))
    return out


def _parse_passwd(data: bytes) -> tuple[PasswdEntry, ...]:
    entries = []
    for f in _lines(data):
        if len(f) >= 4 and f[0] and (uid := _id(f[2])) is not None and (gid := _id(f[3])) is not None:
            entries.append(PasswdEntry(f[0], uid, gid, f[5] if len(f) > 5 and f[5] else "/"))
    return tuple(entries)


def _parse_group(data: bytes) -> tuple[GroupEntry, ...]:
    entries = []
    for f in _lines(data):
        if len(f) >= 3 and f[0] and (gid := _id(f[2])) is not None:
            members = tuple(m for m in (f[3].split(",") if len(f) > 3 else []) if m)
            entries.append(GroupEntry(f[0], gid, members))
    return tuple(entries)


def resolve(db: UserDb, user: str) -> tuple[int, int, tuple[int, ...]]:
    """`name`, `uid`, `uid:gid`, `name:group` -> (uid, gid, supplementary gids).

    Like Docker: a numeric uid missing from /etc/passwd is allowed (gid 0, no groups); a name
    must exist. Supplementary groups are those listing the user in /etc/group, without the
    primary gid. An empty `user` means root.
    """
    spec_user, sep, spec_group = (user or "0").partition(":")
    if sep and not spec_group:
        raise UnknownUser(f"invalid user {user!r}: empty group after ':'")
    entry: PasswdEntry | None
    if (uid := _id(spec_user)) is not None:
        entry = next((u for u in db.users if u.uid == uid), None)
    elif spec_user.isdigit():
        raise UnknownUser(f"invalid user {user!r}: uid out of range")
    else:
        entry = next((u for u in db.users if u.name == spec_user), None)
        if entry is None:
            raise UnknownUser(f"user {spec_user!r} not found in the image's /etc/passwd")
        uid = entry.uid
    gid = entry.gid if entry else 0
    if sep:
        if (g := _id(spec_group)) is not None:
            gid = g
        elif spec_group.isdigit():
            raise UnknownUser(f"invalid user {user!r}: gid out of range")
        else:
            grp = next((g for g in db.groups if g.name == spec_group), None)
            if grp is None:
                raise UnknownUser(f"group {spec_group!r} not found in the image's /etc/group")
            gid = grp.gid
    extra: tuple[int, ...] = ()
    if entry is not None:
        extra = tuple(sorted({g.gid for g in db.groups if entry.name in g.members} - {gid}))
    return uid, gid, extra
