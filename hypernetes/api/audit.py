"""The audit log: one JSON line per mutating request (who, their tenant, verb, object, result), on
disk, rotated by size. Reads are not logged: they are many, and the question an audit answers is
"who changed what". Writes are synchronous and small; the file is opened 0600 (it names users)."""

from __future__ import annotations

import datetime as dt
import json
import logging
import logging.handlers
import os
from pathlib import Path
from typing import Any

from hypernetes.auth.identity import UserInfo

MUTATING = frozenset(("POST", "PUT", "PATCH", "DELETE"))


class AuditLog:
    def __init__(self, path: Path, *, max_bytes: int = 50 * 1024 * 1024, backups: int = 5) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
        self.path = path
        self._handler = logging.handlers.RotatingFileHandler(path, maxBytes=max_bytes, backupCount=backups,
                                                             encoding="utf-8")
        self._handler.setFormatter(logging.Formatter("%(message)s"))

    def record(self, *, user: UserInfo | None, tenant: str, verb: str, path: str, resource: str,
               subresource: str, namespace: str, name: str, code: int, source: str) -> None:
        entry: dict[str, Any] = {
            "ts": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "user": user.name if user else None,
            "groups": list(user.groups) if user else [],
            "tenant": tenant or None,
            "verb": verb,
            "path": path,
            "resource": resource,
            "subresource": subresource or None,
            "namespace": namespace or None,
            "name": name or None,
            "code": code,
            "result": "allowed" if code < 400 else ("denied" if code in (401, 403) else "failed"),
            "source": source,
        }
        self._handler.emit(
            logging.makeLogRecord(
                {
                    "msg": json.dumps(entry, separators=(",", ":")),
                    "levelno": logging.INFO,
                    "levelname": "INFO",
                }
            )
        )

    def close(self) -> None:
        self._handler.close()
