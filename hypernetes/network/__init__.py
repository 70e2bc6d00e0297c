"""Host plumbing for tenant networks: a router namespace per network with its bridge, gateway,
service load balancing and NAT; pod taps on the bridge; nftables isolation. See docs/network.md.

Addresses are never chosen here: the caller (node agent, from the controllers' IPAM) hands over a
complete `NetworkState` and `TenantNetworkHost.apply` makes the host match it.
"""

from hypernetes.network.host import NetworkApplyError, TenantNetworkHost
from hypernetes.network.state import (
    DEFAULT_LINK_POOL,
    Endpoint,
    LinkAddresses,
    Network,
    NetworkState,
    Pod,
    Service,
    ServicePort,
)

__all__ = [
    "DEFAULT_LINK_POOL",
    "Endpoint",
    "LinkAddresses",
    "Network",
    "NetworkApplyError",
    "NetworkState",
    "Pod",
    "Service",
    "ServicePort",
    "TenantNetworkHost",
]
