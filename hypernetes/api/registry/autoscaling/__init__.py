"""autoscaling: the HorizontalPodAutoscaler (v2; the scale subresource's Scale is autoscaling/v1's,
served by the workloads that have one)."""

from hypernetes.api.registry.autoscaling import horizontalpodautoscaler

KINDS = (horizontalpodautoscaler.KIND,)
