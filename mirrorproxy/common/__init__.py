"""Small pieces every layer uses: coalescing of shared work, IP addresses
and networks, the runner that keeps blocking work off the reactor, and
configuration errors."""
