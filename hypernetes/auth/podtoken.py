"""Service-account credentials for pods, as upstream's ServiceAccount admission plugin: every pod
whose account allows automounting gets a projected `kube-api-access-*` volume (a token bound to the
pod, the cluster CA, the namespace) mounted read-only at
/var/run/secrets/kubernetes.io/serviceaccount in each container."""

from __future__ import annotations

import secrets

from hypernetes.objects import Obj

MOUNT_PATH = "/var/run/secrets/kubernetes.io/serviceaccount"
ROOT_CA_CONFIGMAP = "kube-root-ca.crt"
# upstream's value: the token expires an hour after it is issued; the node agent puts a fresh one
# into the pod's VM once 80% of that has passed (node/worker.py), as the kubelet does
TOKEN_SECONDS = 3607


def _suffix() -> str:
    return "".join(secrets.choice("bcdfghjklmnpqrstvwxz2456789") for _ in range(5))


def token_volume() -> Obj:
    return {
        "name": f"kube-api-access-{_suffix()}",
        "projected": {
            "defaultMode": 0o644,
            "sources": [
                {"serviceAccountToken": {"expirationSeconds": TOKEN_SECONDS, "path": "token"}},
                {"configMap": {"name": ROOT_CA_CONFIGMAP, "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {
                    "downwardAPI": {
                        "items": [
                            {
                                "path": "namespace",
                                "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"},
                            }
                        ]
                    }
                },
            ],
        },
    }


def add_token_volume(pod: Obj, account: Obj | None) -> None:
    """Mutates a new pod: sets serviceAccountName and, unless the pod or its account opt out, adds
    the token volume and its mounts (containers that already mount that path are left alone)."""
    spec = pod.setdefault("spec", {})
    spec["serviceAccountName"] = spec.get("serviceAccountName") or spec.get("serviceAccount") or "default"
    auto = spec.get("automountServiceAccountToken")
    if auto is None and account is not None:
        auto = account.get("automountServiceAccountToken")
    if auto is False:
        return
    volumes = spec.setdefault("volumes", [])
    if any(str(v.get("name", "")).startswith("kube-api-access-") for v in volumes if isinstance(v, dict)):
        return
    vol = token_volume()
    volumes.append(vol)
    for group in ("initContainers", "containers"):
        for c in spec.get(group) or []:
            if not isinstance(c, dict):
                continue
            mounts = c.setdefault("volumeMounts", [])
            if not any(isinstance(m, dict) and m.get("mountPath") == MOUNT_PATH for m in mounts):
                mounts.append({"name": vol["name"], "readOnly": True, "mountPath": MOUNT_PATH})
