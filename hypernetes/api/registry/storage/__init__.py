"""storage.k8s.io, one module per kind."""

from hypernetes.api.registry.storage import storageclass

KINDS = (storageclass.KIND,)
