"""apiextensions.k8s.io: CustomResourceDefinitions (their objects: hypernetes/api/customresources)."""

from hypernetes.api.registry.apiextensions import crd

KINDS = (crd.KIND,)
