"""Events about the objects controllers act on (`kubectl describe` shows them), as upstream's
event recorder writes them: core/v1 Events named `<object>.<unique suffix>`."""

from __future__ import annotations

import logging
import secrets
import socket
from typing import Any

from hypernetes.apiclient import ApiClient, ApiException
from hypernetes.controllers import meta as m

log = logging.getLogger(__name__)
Obj = dict[str, Any]


class EventRecorder:
    def __init__(self, client: ApiClient, component: str) -> None:
        self.client, self.component = client, component
        self.instance = f"{component}-{socket.gethostname()}"

    async def record(self, obj: Obj, etype: str, reason: str, message: str) -> None:
        """Best effort: a lost event is not worth failing (or retrying) a sync for."""
        ns = m.namespace(obj) or "default"
        now = m.rfc3339()
        event = {
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": f"{m.name(obj)}.{secrets.token_hex(8)}", "namespace": ns},
            "involvedObject": {"kind": obj.get("kind", ""), "apiVersion": obj.get("apiVersion", ""),
                               "namespace": m.namespace(obj) or None, "name": m.name(obj),
                               "uid": m.uid(obj),
                               "resourceVersion": m.meta(obj).get("resourceVersion", "")},
            "reason": reason, "message": message, "type": etype,
            "source": {"component": self.component},
            "firstTimestamp": now, "lastTimestamp": now, "count": 1,
            "reportingComponent": self.component, "reportingInstance": self.instance,
        }
        try:
            await self.client.create("v1", "events", event, ns)
        except (ApiException, OSError) as e:
            log.debug("event %s for %s not recorded: %s", reason, m.name(obj), e)

    async def normal(self, obj: Obj, reason: str, message: str) -> None:
        await self.record(obj, "Normal", reason, message)

    async def warning(self, obj: Obj, reason: str, message: str) -> None:
        await self.record(obj, "Warning", reason, message)
