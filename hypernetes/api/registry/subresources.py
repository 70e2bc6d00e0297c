"""The subresources a kind can serve, once for every kind that has them (upstream's shared
status, scale and connect storage): what discovery lists (verbs, the kind they answer with) and
what the OpenAPI operations take and return. An entry names its subresources; this says what
each name means.
"""

from __future__ import annotations

from dataclasses import dataclass

from hypernetes.objects import Obj as JSON

# the HTTP method of each verb, in the order OpenAPI documents list them
HTTP = {"get": "get", "update": "put", "patch": "patch", "create": "post"}


def _q(name: str, kind: str = "string") -> tuple[str, str]:
    return (name, kind)


@dataclass(frozen=True)
class Subresource:
    name: str
    verbs: tuple[str, ...]  # sorted, as discovery lists them
    # the kind its bodies are, (group, version, kind, OpenAPI definition); None: the parent kind
    body: tuple[str, str, str, str] | None = None
    connect: bool = False  # a stream (exec): upstream's "connect" action, no body
    stream: bool = False  # plain text answer (log): no response schema
    params: tuple[tuple[str, str], ...] = ()  # query parameters beyond the common ones (name, type)
    produces: tuple[str, ...] = ("application/json", "application/yaml")

    def gvk(self, parent_group: str, parent_version: str, parent_kind: str) -> JSON:
        if self.body is None:
            return {"group": parent_group, "version": parent_version, "kind": parent_kind}
        g, v, k, _ = self.body
        return {"group": g, "version": v, "kind": k}

    def definition(self, parent_definition: str) -> str | None:
        if self.connect or self.stream:
            return None
        return parent_definition if self.body is None else self.body[3]


SUBRESOURCES: dict[str, Subresource] = {
    s.name: s
    for s in (
        Subresource("status", ("get", "patch", "update")),
        Subresource(
            "scale",
            ("get", "patch", "update"),
            ("autoscaling", "v1", "Scale", "io.k8s.api.autoscaling.v1.Scale"),
        ),
        Subresource("finalize", ("update",)),
        Subresource("binding", ("create",), ("", "v1", "Binding", "io.k8s.api.core.v1.Binding")),
        Subresource("eviction", ("create",), ("policy", "v1", "Eviction", "io.k8s.api.policy.v1.Eviction")),
        Subresource(
            "token",
            ("create",),
            ("authentication.k8s.io", "v1", "TokenRequest", "io.k8s.api.authentication.v1.TokenRequest"),
        ),
        Subresource(
            "log",
            ("get",),
            stream=True,
            params=(
                _q("container"),
                _q("follow", "boolean"),
                _q("previous", "boolean"),
                _q("sinceSeconds", "integer"),
                _q("tailLines", "integer"),
                _q("timestamps", "boolean"),
                _q("limitBytes", "integer"),
            ),
            produces=("text/plain", "application/json"),
        ),
        Subresource(
            "exec",
            ("create", "get"),
            ("", "v1", "PodExecOptions", "io.k8s.api.core.v1.PodExecOptions"),
            connect=True,
            params=(
                _q("command"),
                _q("container"),
                _q("stdin", "boolean"),
                _q("stdout", "boolean"),
                _q("stderr", "boolean"),
                _q("tty", "boolean"),
            ),
            produces=("*/*",),
        ),
    )
}
