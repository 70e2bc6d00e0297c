"""What Hypernetes adds on top of the upstream schemas: the enum values upstream validates in
code, and the short list of fields it accepts in its schema but Hypernetes does not support.

Both tables are keyed by (definition, property), so a rule holds wherever the type appears
(a Pod's spec and a Deployment's pod template alike).
"""

from __future__ import annotations

from hypernetes.volumes.objects import LOCAL_DRIVER
from hypernetes.volumes.rbd_objects import RBD_DRIVER

_C = "io.k8s.api.core.v1."
_APPS = "io.k8s.api.apps.v1."
_BATCH = "io.k8s.api.batch.v1."
_STORAGE = "io.k8s.api.storage.v1."
_META = "io.k8s.apimachinery.pkg.apis.meta.v1."

ENUMS: dict[tuple[str, str], tuple[str, ...]] = {
    (_C + "PodSpec", "restartPolicy"): ("Always", "OnFailure", "Never"),
    (_C + "PodSpec", "dnsPolicy"): ("ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"),
    (_C + "PodSpec", "preemptionPolicy"): ("PreemptLowerPriority", "Never"),
    (_C + "Container", "imagePullPolicy"): ("Always", "IfNotPresent", "Never"),
    (_C + "Container", "terminationMessagePolicy"): ("File", "FallbackToLogsOnError"),
    (_C + "Container", "restartPolicy"): ("Always",),
    (_C + "ContainerPort", "protocol"): ("SCTP", "TCP", "UDP"),
    (_C + "ServicePort", "protocol"): ("SCTP", "TCP", "UDP"),
    (_C + "EndpointPort", "protocol"): ("SCTP", "TCP", "UDP"),
    (_C + "HTTPGetAction", "scheme"): ("HTTP", "HTTPS"),
    (_C + "Toleration", "operator"): ("Equal", "Exists"),
    (_C + "Toleration", "effect"): ("NoExecute", "NoSchedule", "PreferNoSchedule"),
    (_C + "Taint", "effect"): ("NoExecute", "NoSchedule", "PreferNoSchedule"),
    (_C + "PodSecurityContext", "fsGroupChangePolicy"): ("Always", "OnRootMismatch"),
    (_C + "SeccompProfile", "type"): ("Localhost", "RuntimeDefault", "Unconfined"),
    (_C + "EmptyDirVolumeSource", "medium"): ("", "Memory", "HugePages"),
    (_C + "NodeSelectorRequirement", "operator"): ("DoesNotExist", "Exists", "Gt", "In", "Lt", "NotIn"),
    (_C + "TopologySpreadConstraint", "whenUnsatisfiable"): ("DoNotSchedule", "ScheduleAnyway"),
    (_C + "ServiceSpec", "type"): ("ClusterIP", "ExternalName", "LoadBalancer", "NodePort"),
    (_C + "ServiceSpec", "sessionAffinity"): ("ClientIP", "None"),
    (_C + "ServiceSpec", "externalTrafficPolicy"): ("Cluster", "Local"),
    (_C + "ServiceSpec", "internalTrafficPolicy"): ("Cluster", "Local"),
    (_C + "ServiceSpec", "ipFamilyPolicy"): ("PreferDualStack", "RequireDualStack", "SingleStack"),
    (_C + "PodStatus", "phase"): ("Failed", "Pending", "Running", "Succeeded", "Unknown"),
    (_C + "PodCondition", "status"): ("False", "True", "Unknown"),
    (_C + "NodeCondition", "status"): ("False", "True", "Unknown"),
    (_C + "NamespaceStatus", "phase"): ("Active", "Terminating"),
    (_C + "PersistentVolumeClaimSpec", "volumeMode"): ("Block", "Filesystem"),
    (_C + "PersistentVolumeSpec", "volumeMode"): ("Block", "Filesystem"),
    (_C + "PersistentVolumeSpec", "persistentVolumeReclaimPolicy"): ("Delete", "Recycle", "Retain"),
    (_C + "PersistentVolumeClaimStatus", "phase"): ("Bound", "Lost", "Pending"),
    (_C + "PersistentVolumeStatus", "phase"): ("Available", "Bound", "Failed", "Pending", "Released"),
    (_STORAGE + "StorageClass", "reclaimPolicy"): ("Delete", "Retain"),
    (_STORAGE + "StorageClass", "volumeBindingMode"): ("Immediate", "WaitForFirstConsumer"),
    (_C + "Event", "type"): ("Normal", "Warning"),
    (_META + "LabelSelectorRequirement", "operator"): ("DoesNotExist", "Exists", "In", "NotIn"),
    (_APPS + "DeploymentStrategy", "type"): ("Recreate", "RollingUpdate"),
    (_BATCH + "JobSpec", "completionMode"): ("Indexed", "NonIndexed"),
    (_BATCH + "JobSpec", "podReplacementPolicy"): ("Failed", "TerminatingOrFailed"),
    (_BATCH + "JobCondition", "status"): ("False", "True", "Unknown"),
    ("io.hypernetes.v1.UserSpec", "role"): ("admin", "member", "viewer"),
}

# Volume sources a pod VM can be given: disks we build (emptyDir, PVC block devices) and files we
# write into the guest (configMap, secret, projected, downwardAPI). Host paths would break tenant
# isolation; the network and cloud filesystems are not wired into the VM.
SUPPORTED_VOLUMES = ("configMap", "downwardAPI", "emptyDir", "persistentVolumeClaim", "projected", "secret")

# What a PersistentVolume can be: a local.hypernetes.io CSI volume (a disk file on one node, see
# docs/volumes.md). The in-tree sources would be mounted on the host or need a cloud; none is wired.
PV_SOURCES = (
    "awsElasticBlockStore",
    "azureDisk",
    "azureFile",
    "cephfs",
    "cinder",
    "fc",
    "flexVolume",
    "flocker",
    "gcePersistentDisk",
    "glusterfs",
    "hostPath",
    "iscsi",
    "local",
    "nfs",
    "photonPersistentDisk",
    "portworxVolume",
    "quobyte",
    "rbd",
    "scaleIO",
    "storageos",
    "vsphereVolume",
)
_PV_ONLY_CSI = "persistent volumes are local.hypernetes.io CSI volumes (spec.csi)"
_NO_ATTRIBUTES_CLASS = "no VolumeAttributesClass API"
_NO_SECRETS = "the volume drivers take only nodeStageSecretRef and controllerExpandSecretRef"

# (definition, field) -> why it is rejected. Presence (any non-null value) is rejected.
UNSUPPORTED: dict[tuple[str, str], str] = {
    **{(_C + "PersistentVolumeSpec", source): _PV_ONLY_CSI for source in PV_SOURCES},
    (_C + "PersistentVolumeSpec", "mountOptions"): "the guest mounts volumes with its own options",
    (_C + "PersistentVolumeSpec", "volumeAttributesClassName"): _NO_ATTRIBUTES_CLASS,
    (_C + "PersistentVolumeClaimSpec", "volumeAttributesClassName"): _NO_ATTRIBUTES_CLASS,
    (_C + "PersistentVolumeClaimSpec", "dataSource"): "no volume snapshots, cloning or populators",
    (_C + "PersistentVolumeClaimSpec", "dataSourceRef"): "no volume snapshots, cloning or populators",
    (_C + "CSIPersistentVolumeSource", "controllerPublishSecretRef"): _NO_SECRETS,
    (_C + "CSIPersistentVolumeSource", "nodeExpandSecretRef"): _NO_SECRETS,
    (_C + "CSIPersistentVolumeSource", "nodePublishSecretRef"): _NO_SECRETS,
    (
        _C + "CSIPersistentVolumeSource",
        "readOnly",
    ): "set readOnly on the pod's volume, or give the claim only the ReadOnlyMany access mode",
    (_STORAGE + "StorageClass", "mountOptions"): "the guest mounts volumes with its own options",
    (_STORAGE + "StorageClass", "allowedTopologies"): "local volumes go to the Ready node with the "
    "least volume capacity",
    (_C + "PodSpec", "ephemeralContainers"): "no ephemeralcontainers subresource (use kubectl exec)",
    (_C + "PodSpec", "resourceClaims"): "no dynamic resource allocation",
    (_C + "PodSpec", "schedulingGates"): "the scheduler does not hold pods at gates",
    (_C + "PodSpec", "resources"): "pod-level resources are not supported; size the VM per container",
    (_C + "Container", "resizePolicy"): "in-place resize of a running VM is not supported",
    (_C + "PodSecurityContext", "windowsOptions"): "pods are Linux VMs",
    (_C + "SecurityContext", "windowsOptions"): "pods are Linux VMs",
    (_C + "VolumeProjection", "clusterTrustBundle"): "no ClusterTrustBundle API",
    (_C + "ServiceSpec", "externalIPs"): "tenants may not claim addresses outside their network",
    (_BATCH + "JobSpec", "podFailurePolicy"): "the job controller counts failures by backoffLimit only",
    (_BATCH + "JobSpec", "successPolicy"): "the job controller succeeds by completions only",
    (_BATCH + "JobSpec", "backoffLimitPerIndex"): "the job controller counts failures by backoffLimit only",
    (_BATCH + "JobSpec", "maxFailedIndexes"): "the job controller counts failures by backoffLimit only",
    (_BATCH + "JobSpec", "managedBy"): "jobs are reconciled by the built-in controller only",
}

# (definition, field) -> the values that are supported (others are rejected, but only when set).
SUPPORTED_VALUES: dict[tuple[str, str], tuple[str, ...]] = {
    (_C + "PodOS", "name"): ("linux",),
    # node ports are published on every host and lead to the service's own network's router;
    # there is no cloud load balancer to give LoadBalancer services an address
    (_C + "ServiceSpec", "type"): ("ClusterIP", "ExternalName", "NodePort"),
    # containers live inside the VM: mounts cannot propagate to or from the host
    (_C + "VolumeMount", "mountPropagation"): ("None",),
    (_C + "CSIPersistentVolumeSource", "driver"): (LOCAL_DRIVER, RBD_DRIVER),
    # Recycle (rm -rf on the volume) is deprecated upstream; nothing here mounts a volume to do it
    (_C + "PersistentVolumeSpec", "persistentVolumeReclaimPolicy"): ("Delete", "Retain"),
    # the scheduler holds a pod until its claims are bound: binding cannot wait for the pod
    (_STORAGE + "StorageClass", "volumeBindingMode"): ("Immediate",),
}

# (definition, field, value) -> why that value is refused: said after the supported values
VALUE_REASONS: dict[tuple[str, str, str], str] = {
    (
        _C + "ServiceSpec",
        "type",
        "LoadBalancer",
    ): "no load balancer provider gives these services an address; use NodePort",
}


def volume_unsupported(field: str) -> str | None:
    if field == "name" or field in SUPPORTED_VOLUMES:
        return None
    return "supported volume types: " + ", ".join(SUPPORTED_VOLUMES)
