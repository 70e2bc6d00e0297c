"""Events about the objects controllers act on (`kubectl describe` shows them), written through
the shared recorder (`hypernetes.eventrecorder`): repeats are counted, similar ones combined,
spam dropped, as upstream's recorder does."""

from __future__ import annotations

import socket

from hypernetes import eventrecorder
from hypernetes.apiclient import ApiClient
from hypernetes.objects import Obj


class EventRecorder:
    def __init__(self, client: ApiClient, component: str) -> None:
        self.recorder = eventrecorder.EventRecorder(
            client, component, instance=f"{component}-{socket.gethostname()}"
        )

    async def record(self, obj: Obj, etype: str, reason: str, message: str) -> None:
        """Best effort: a lost event is not worth failing (or retrying) a sync for."""
        await self.recorder.record(eventrecorder.object_reference(obj), etype, reason, message)

    async def normal(self, obj: Obj, reason: str, message: str) -> None:
        await self.record(obj, "Normal", reason, message)

    async def warning(self, obj: Obj, reason: str, message: str) -> None:
        await self.record(obj, "Warning", reason, message)
