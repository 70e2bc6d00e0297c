"""apps, one module per kind."""

from hypernetes.api.registry.apps import controllerrevision, daemonset, deployment, replicaset, statefulset

KINDS = (
    deployment.KIND,
    replicaset.KIND,
    statefulset.KIND,
    daemonset.KIND,
    controllerrevision.KIND,
)
