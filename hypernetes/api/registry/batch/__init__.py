"""batch, one module per kind."""

from hypernetes.api.registry.batch import job

KINDS = (job.KIND,)
