"""Identities, tenants, tokens, authorization, and the cluster CA and certificates."""
