"""rbac.authorization.k8s.io, one module per kind (the rules they share: policy.py). How tenants'
bindings are evaluated: hypernetes/auth/rbac.py."""

from hypernetes.api.registry.rbac import clusterrole, clusterrolebinding, role, rolebinding

KINDS = (clusterrolebinding.KIND, clusterrole.KIND, rolebinding.KIND, role.KIND)
