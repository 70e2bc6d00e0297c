"""The key layout of API objects in the store, as kube-apiserver lays them out in etcd."""

from __future__ import annotations


def key_prefix(group: str, plural: str, namespace: str | None) -> str:
    """`/registry/pods/` (all namespaces), `/registry/pods/default/`, `/registry/apps/deployments/`."""
    base = f"/registry/{group}/{plural}/" if group else f"/registry/{plural}/"
    return f"{base}{namespace}/" if namespace else base


def object_key(group: str, plural: str, namespace: str | None, name: str) -> str:
    return key_prefix(group, plural, namespace) + name


# Identity records that are not API objects (never served): password hashes and revocations.
CREDENTIALS = "/hypernetes/credentials/"
REVOKED = "/hypernetes/revoked/"
