"""apiregistration.k8s.io: the APIService objects of the groups this server serves."""

from hypernetes.api.registry.apiregistration import apiservice

KINDS = (apiservice.KIND,)
