"""authentication.k8s.io: reviews only (TokenRequest is the serviceaccounts/token subresource)."""

from hypernetes.api.registry.authentication import selfsubjectreview

KINDS = (selfsubjectreview.KIND, selfsubjectreview.KIND_V1BETA1)
