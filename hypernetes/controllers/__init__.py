"""Reconcile loops over API objects (upstream kube-controller-manager's semantics): namespace
finalization, default service accounts, replicasets, deployments, jobs, endpoints and garbage
collection. Controllers only read and write API objects; they never touch a host."""

from hypernetes.controllers.manager import CONTROLLERS, ControllerManager

__all__ = ["CONTROLLERS", "ControllerManager"]
