"""Custom resources: the objects of CustomResourceDefinitions, served dynamically.

Each API server keeps the kinds its CRDs define (kinds.CustomKinds), follows the CRDs in the
store through a watch (informer.py: a CRD made through another API server on the same etcd is
served here within the watch's latency, with no restart), and removes a deleted CRD's objects
before the CRD goes. The kinds are ordinary registry entries (hypernetes/api/registry/kind.py),
so CRUD, watch, Table, patch and tenancy treat them as built-in kinds; what is particular is the
schema (schema.py: pruning, defaulting, validation), the printer columns (columns.py), the scale
subresource (scale.py) and the OpenAPI documents (openapi.py)."""
