"""coordination.k8s.io, one module per kind."""

from hypernetes.api.registry.coordination import lease

KINDS = (lease.KIND,)
