"""autoscaling: the HorizontalPodAutoscaler, v2 (preferred, stored) and v1 (converted); the scale
subresource's Scale is autoscaling/v1's, served by the workloads that have one."""

from hypernetes.api.registry.autoscaling import horizontalpodautoscaler, horizontalpodautoscalerv1

KINDS = (horizontalpodautoscaler.KIND, horizontalpodautoscalerv1.KIND)
