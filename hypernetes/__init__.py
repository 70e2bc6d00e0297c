"""Hypernetes: a multi-tenant, Kubernetes-compatible container platform where every pod is a micro-VM."""

__version__ = "0.1.0"
