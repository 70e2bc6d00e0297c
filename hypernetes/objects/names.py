"""Well-known label, annotation and finalizer names: each spelled once.

Upstream's (`kubernetes.io`, `k8s.io`) keep their meaning; ours live under `hypernetes.io`.
"""

from __future__ import annotations

# -- hypernetes.io -----------------------------------------------------------------------------

# On a namespace (and what is made for it): the tenant that owns it.
TENANT_LABEL = "hypernetes.io/tenant"
# On a namespace: held until the tenant's usage no longer counts it.
TENANT_FINALIZER = "hypernetes.io/tenant"
# On a service account: the role it acts with ("" = no access beyond discovery and self-review).
ROLE_ANNOTATION = "hypernetes.io/role"
# On a pod: the guest kernel it boots (absent: the node's default).
KERNEL_ANNOTATION = "hypernetes.io/kernel"
# On a Node: the kernels registered there, comma-separated.
KERNELS_ANNOTATION = "hypernetes.io/kernels"
# On a Node: the pod runtime it runs (hypervm, gvisor).
RUNTIME_LABEL = "hypernetes.io/runtime"
# On a namespace: its tenant network; on a pod: the network it is on, its address and MAC.
NETWORK_ANNOTATION = "hypernetes.io/network"
IP_ANNOTATION = "hypernetes.io/ip"
MAC_ANNOTATION = "hypernetes.io/mac"
# "true" on a tenant's (or the cluster's) default network.
DEFAULT_NETWORK_LABEL = "hypernetes.io/default-network"
# UserInfo.extra keys our authenticators set (what SelfSubjectReview shows): the user's tenant
# and role.
TENANT_EXTRA = "hypernetes.io/tenant"
ROLE_EXTRA = "hypernetes.io/role"
# On a local PersistentVolume: its backing file still exists on its node.
BACKING_FILE_FINALIZER = "local.hypernetes.io/backing-file"

# -- kubernetes.io -----------------------------------------------------------------------------

# On every namespace, forced to its name (namespace selectors trust it).
METADATA_NAME_LABEL = "kubernetes.io/metadata.name"
HOSTNAME_LABEL = "kubernetes.io/hostname"
# A Node's roles (kubectl's ROLES column): node-role.kubernetes.io/<role>, or the older label.
NODE_ROLE_LABEL_PREFIX = "node-role.kubernetes.io/"
NODE_ROLE_LABEL = "kubernetes.io/role"
OS_LABEL = "kubernetes.io/os"
ARCH_LABEL = "kubernetes.io/arch"
# spec.finalizers of a namespace: its content is being deleted.
NAMESPACE_FINALIZER = "kubernetes"
PVC_PROTECTION_FINALIZER = "kubernetes.io/pvc-protection"
PV_PROTECTION_FINALIZER = "kubernetes.io/pv-protection"
DEFAULT_CLASS_ANNOTATION = "storageclass.kubernetes.io/is-default-class"
BETA_DEFAULT_CLASS_ANNOTATION = "storageclass.beta.kubernetes.io/is-default-class"
BETA_STORAGE_CLASS_ANNOTATION = "volume.beta.kubernetes.io/storage-class"

# The identity (certificate CN) the API servers present to node servers: the node checks it,
# auth/nodecerts.py issues it.
APISERVER_CLIENT = "hypernetes:apiserver"
