"""metrics.k8s.io: what `kubectl top` and the HPA read, served from memory by the API server
(api/metricsapi.py) as metrics-server serves them; never stored."""

from hypernetes.api.registry.metrics import nodemetrics, podmetrics

KINDS = (nodemetrics.KIND, podmetrics.KIND)
