"""networking.k8s.io, one module per kind."""

from hypernetes.api.registry.networking import ingress, ingressclass, networkpolicy

KINDS = (networkpolicy.KIND, ingress.KIND, ingressclass.KIND)
