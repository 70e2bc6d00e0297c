"""The core group ("" , /api/v1), one module per kind."""

from hypernetes.api.registry.core import (
    configmap,
    endpoints,
    event,
    limitrange,
    namespace,
    node,
    persistentvolume,
    persistentvolumeclaim,
    pod,
    replicationcontroller,
    resourcequota,
    secret,
    service,
    serviceaccount,
)

KINDS = (
    namespace.KIND,
    pod.KIND,
    node.KIND,
    event.KIND,
    service.KIND,
    endpoints.KIND,
    configmap.KIND,
    secret.KIND,
    serviceaccount.KIND,
    persistentvolumeclaim.KIND,
    persistentvolume.KIND,
    limitrange.KIND,
    resourcequota.KIND,
    replicationcontroller.KIND,
)
