"""batch, one module per kind."""

from hypernetes.api.registry.batch import cronjob, job

KINDS = (job.KIND, cronjob.KIND)
