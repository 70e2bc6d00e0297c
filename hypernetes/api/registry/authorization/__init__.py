"""authorization.k8s.io: the reviews kubectl auth can-i sends."""

from hypernetes.api.registry.authorization import selfsubjectaccessreview, selfsubjectrulesreview

KINDS = (selfsubjectaccessreview.KIND, selfsubjectrulesreview.KIND)
