"""node.k8s.io, one module per kind."""

from hypernetes.api.registry.node import runtimeclass

KINDS = (runtimeclass.KIND,)
