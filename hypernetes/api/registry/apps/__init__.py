"""apps, one module per kind."""

from hypernetes.api.registry.apps import deployment, replicaset

KINDS = (deployment.KIND, replicaset.KIND)
