"""What the API objects of Ceph RBD volumes say (docs/volumes.md, "Ceph RBD"), read the same way
by the API's validation, the volume controller and the node agent. Parameter and Secret key
names follow ceph-csi's RBD driver where they mean the same thing, so a ceph-csi StorageClass
needs little more than a new provisioner name."""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass, field
from typing import Any

RBD_DRIVER = "rbd.hypernetes.io"  # the CSI driver name and the StorageClass provisioner

# StorageClass parameters
POOL = "pool"
IMAGE_FEATURES = "imageFeatures"
FSTYPE = "csi.storage.k8s.io/fstype"
_SECRET = "csi.storage.k8s.io/{}-secret-{}"
PROVISIONER_SECRET = "provisioner"  # create and delete images
EXPAND_SECRET = "controller-expand"  # grow images (defaults to the provisioner's)
NODE_SECRET = "node-stage"  # what a node gives QEMU to open the image
SECRET_ROLES = (PROVISIONER_SECRET, EXPAND_SECRET, NODE_SECRET)
REQUIRED_SECRETS = (PROVISIONER_SECRET, NODE_SECRET)
PARAMETERS = (
    POOL,
    IMAGE_FEATURES,
    FSTYPE,
    *(_SECRET.format(role, part) for role in SECRET_ROLES for part in ("name", "namespace")),
)
# the Secret's keys (ceph-csi's userID/userKey; monitors are in it too, not in a ConfigMap)
SECRET_USER, SECRET_KEY, SECRET_MONITORS = "userID", "userKey", "monitors"

# exclusive-lock is what keeps two VMs from writing one image; object-map and fast-diff make
# deletes and resizes of thin images fast; deep-flatten for clones. All are older than QEMU 7.2.
DEFAULT_FEATURES = "layering,exclusive-lock,object-map,fast-diff,deep-flatten"
FEATURES = ("deep-flatten", "exclusive-lock", "fast-diff", "journaling", "layering", "object-map")
FEATURE_NEEDS = {"object-map": "exclusive-lock", "fast-diff": "object-map", "journaling": "exclusive-lock"}
POOL_NAME = re.compile(r"[A-Za-z0-9_.-]{1,100}")
IMAGE_NAME = re.compile(r"[a-z0-9][a-z0-9.-]{0,252}")
USER_NAME = re.compile(r"[A-Za-z0-9_.-]{1,100}")
MONITOR = re.compile(r"\[?(v[12]:)?[A-Za-z0-9.-]+(:\d{1,5})?(/\d+)?\]?|\[[0-9a-fA-F:]+\](:\d{1,5})?")
CEPHX_KEY = re.compile(r"[A-Za-z0-9+/]{38,42}={0,2}")


def secret_param(role: str, part: str) -> str:
    return _SECRET.format(role, part)


def check_features(value: str) -> list[str]:
    """Problems with an imageFeatures value (comma-separated feature names)."""
    names = [f.strip() for f in value.split(",") if f.strip()]
    if not names:
        return ["must name at least one image feature"]
    bad = [f for f in names if f not in FEATURES]
    if bad:
        return [f"unsupported image feature(s) {', '.join(bad)}: supported: {', '.join(FEATURES)}"]
    out = [
        f"{f} needs {FEATURE_NEEDS[f]}" for f in names if f in FEATURE_NEEDS and FEATURE_NEEDS[f] not in names
    ]
    if "exclusive-lock" not in names:
        out.append("must include exclusive-lock: it is what keeps two VMs from writing one image")
    return out


@dataclass(frozen=True)
class CephCredentials:
    """A cephx user (without `client.`), its key and the monitors (comma-separated)."""

    monitors: str
    user: str
    key: str = field(repr=False)

    def problems(self) -> list[str]:
        out = []
        mons = [m.strip() for m in self.monitors.split(",")] if self.monitors else []
        if not mons or not all(MONITOR.fullmatch(m) for m in mons):
            out.append(f"{SECRET_MONITORS}: must be a comma-separated list of host:port")
        if not USER_NAME.fullmatch(self.user or ""):
            out.append(f"{SECRET_USER}: must be a cephx user name (without client.)")
        if not CEPHX_KEY.fullmatch(self.key or ""):
            out.append(f"{SECRET_KEY}: must be a cephx key (base64)")
        return out


def credentials_from_secret(secret: dict[str, Any]) -> CephCredentials:
    """The credentials a Secret holds (data base64, or stringData as written); ValueError says
    which key is missing or bad, never the key's value."""
    data = secret.get("data") or {}
    values: dict[str, str] = {}
    for k in (SECRET_USER, SECRET_KEY, SECRET_MONITORS):
        if k not in data:
            raise ValueError(f"no {k} in the Secret")
        try:
            values[k] = base64.b64decode(str(data[k]), validate=True).decode().strip()
        except (binascii.Error, UnicodeDecodeError):
            raise ValueError(f"{k} in the Secret is not base64 text") from None
    creds = CephCredentials(values[SECRET_MONITORS], values[SECRET_USER], values[SECRET_KEY])
    problems = creds.problems()
    if problems:
        raise ValueError("; ".join(problems))
    return creds


def secret_ref(params: dict[str, Any], role: str) -> tuple[str, str] | None:
    """(namespace, name) of the class's Secret for a role; the expand role falls back to the
    provisioner's, as ceph-csi's examples set both to one Secret."""
    name, ns = params.get(secret_param(role, "name")), params.get(secret_param(role, "namespace"))
    if name and ns:
        return str(ns), str(name)
    if role == EXPAND_SECRET:
        return secret_ref(params, PROVISIONER_SECRET)
    return None
