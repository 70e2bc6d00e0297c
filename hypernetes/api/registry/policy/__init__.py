"""policy, one module per kind."""

from hypernetes.api.registry.policy import poddisruptionbudget

KINDS = (poddisruptionbudget.KIND,)
