"""The API groups the registry serves, as upstream names them (each group's kinds are the modules
of the package of the same name: core/, apps/, batch/, ...)."""

from __future__ import annotations

from hypernetes.api.registry.kind import Group

CORE = Group("", "Core", "io.k8s.api.core")
STORAGE = Group("storage.k8s.io", "Storage", "io.k8s.api.storage")
NODE = Group("node.k8s.io", "Node", "io.k8s.api.node")
COORDINATION = Group("coordination.k8s.io", "Coordination", "io.k8s.api.coordination")
APPS = Group("apps", "Apps", "io.k8s.api.apps")
BATCH = Group("batch", "Batch", "io.k8s.api.batch")
POLICY = Group("policy", "Policy", "io.k8s.api.policy")
HYPERNETES = Group("hypernetes.io", "Hypernetes", "io.hypernetes")
AUTHENTICATION = Group("authentication.k8s.io", "Authentication", "io.k8s.api.authentication")
AUTHORIZATION = Group("authorization.k8s.io", "Authorization", "io.k8s.api.authorization")
NETWORKING = Group("networking.k8s.io", "Networking", "io.k8s.api.networking")
AUTOSCALING = Group("autoscaling", "Autoscaling", "io.k8s.api.autoscaling")
METRICS = Group("metrics.k8s.io", "Metrics", "io.k8s.metrics.pkg.apis.metrics")
RBAC = Group("rbac.authorization.k8s.io", "RbacAuthorization", "io.k8s.api.rbac")
APIREGISTRATION = Group(
    "apiregistration.k8s.io", "Apiregistration", "io.k8s.kube-aggregator.pkg.apis.apiregistration"
)
