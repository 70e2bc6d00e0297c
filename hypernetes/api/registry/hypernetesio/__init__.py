"""hypernetes.io: the kinds Hypernetes adds (tenancy and tenant networks), one module per kind."""

from hypernetes.api.registry.hypernetesio import ipallocation, network, tenant, user

KINDS = (tenant.KIND, user.KIND, network.KIND, ipallocation.KIND)
