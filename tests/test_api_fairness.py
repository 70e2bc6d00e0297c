"""Noisy neighbours at the API server (issue 12): bounded request bodies, per-tenant fairness (API
Priority and Fairness), and connection limits. A real API server; tenants are callers whose
credential is scoped to a tenant; load that matters comes from another process."""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from hypernetes.api.fairness import FairnessConfig
from hypernetes.auth.identity import tenant_user
from tests.support.apiserver import ApiServerThread

TOKENS = {"acme-token": tenant_user("alice", "acme", "admin"),
          "globex-token": tenant_user("gina", "globex", "admin")}
CM = "/api/v1/namespaces/default/configmaps"


def bomb(levels: int) -> str:
    """A billion-laughs YAML ConfigMap: `levels` of 9 aliases each, ~400 bytes."""
    lines = ["apiVersion: v1", "kind: ConfigMap", "metadata: {name: lol}", "x:",
             "  a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"  a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, levels + 1)]
    return "\n".join(lines) + "\n"


def nested(depth: int) -> Any:
    v: Any = "leaf"
    for _ in range(depth):
        v = {"a": v}
    return v


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServerThread]:
    a = ApiServerThread(tmp_path_factory.mktemp("fair"), extra_users=TOKENS).start()
    yield a
    a.stop()


def client(api: ApiServerThread, token: str | None = None, timeout: float = 30) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token or api.token}"}
    return httpx.Client(base_url=api.url, verify=str(api.ca.ca_cert), headers=headers, timeout=timeout)


def assert_status(r: httpx.Response, code: int, reason: str) -> dict[str, Any]:
    assert r.status_code == code, f"{r.status_code}: {r.text[:500]}"
    body: dict[str, Any] = r.json()
    assert (body["kind"], body["reason"], body["code"]) == ("Status", reason, code), body
    return body


# -- 1. bodies -----------------------------------------------------------------------------------


@pytest.mark.parametrize("path,ctype,method", [
    (CM, "application/yaml", "POST"),
    (CM + "/lol?fieldManager=t", "application/apply-patch+yaml", "PATCH"),
])
def test_yaml_alias_bomb_is_refused_without_stalling_the_server(api: ApiServerThread, path: str, ctype: str,
                                                                method: str) -> None:
    """9 levels of aliases (~600 bytes) stalled the server for 99 s; now a quick 400, and another
    caller is served meanwhile."""
    body = bomb(9)
    assert len(body) < 700
    with client(api, timeout=20) as c, client(api, "globex-token", timeout=20) as other:
        done: list[float] = []

        def bystander() -> None:
            t0 = time.monotonic()
            other.get("/api/v1/namespaces")
            done.append(time.monotonic() - t0)
        t = threading.Timer(0.2, bystander)  # asks while the bomb is being handled
        t.start()
        r = c.request(method, path, content=body, headers={"Content-Type": ctype})
        t.join(20)
        s = assert_status(r, 400, "BadRequest")
        assert "aliases expand" in s["message"], s
        assert done and done[0] < 5


def test_small_aliases_still_work_and_are_independent_copies(api: ApiServerThread) -> None:
    doc = ("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: anchors\n  labels: &l {app: web}\n"
           "  annotations: *l\ndata: {when: 2024-01-01T00:00:00Z}\n")
    with client(api) as c:
        r = c.post(CM, content=doc, headers={"Content-Type": "application/yaml"})
        assert r.status_code == 201, r.text
        meta = r.json()["metadata"]
        assert meta["labels"] == meta["annotations"] == {"app": "web"}
        assert r.json()["data"] == {"when": "2024-01-01T00:00:00Z"}  # a string, as upstream's decoder
        c.delete(CM + "/anchors")


@pytest.mark.parametrize("how", ["create-json", "create-yaml", "merge-patch", "json-patch", "apply",
                                 "delete-options"])
def test_deep_nesting_is_refused_at_decoding(api: ApiServerThread, how: str) -> None:
    deep = nested(400)
    with client(api) as c:
        c.post(CM, json={"metadata": {"name": "deep"}})
        obj = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "deep2"}, "x": deep}
        match how:
            case "create-json":
                r = c.post(CM, content=json.dumps(obj))
            case "create-yaml":
                r = c.post(CM, content=json.dumps(obj), headers={"Content-Type": "application/yaml"})
            case "merge-patch":
                r = c.patch(CM + "/deep", content=json.dumps({"x": deep}),
                            headers={"Content-Type": "application/merge-patch+json"})
            case "json-patch":
                r = c.patch(CM + "/deep", content=json.dumps([{"op": "add", "path": "/x", "value": deep}]),
                            headers={"Content-Type": "application/json-patch+json"})
            case "apply":
                r = c.patch(CM + "/deep2?fieldManager=t", content=json.dumps(obj),
                            headers={"Content-Type": "application/apply-patch+yaml"})
            case _:
                r = c.request("DELETE", CM + "/deep", content=json.dumps({"x": deep}))
        assert r.status_code in (400, 422), f"{r.status_code}: {r.text[:300]}"
        assert r.json()["kind"] == "Status"
        assert "deeper than" in r.json()["message"] or how == "delete-options", r.json()
        c.delete(CM + "/deep")


def test_body_over_3mib_is_413(api: ApiServerThread) -> None:
    obj = {"metadata": {"name": "big"}, "data": {"k": "x" * (3 * 1024 * 1024 + 10)}}
    with client(api) as c:
        assert_status(c.post(CM, content=json.dumps(obj)), 413, "RequestEntityTooLarge")
