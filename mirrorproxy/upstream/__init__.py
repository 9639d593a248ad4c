"""Talking to an upstream registry: the client (requests, auth, redirects,
what it answers checked), and `egress`, the way out (proxies, tunnels, TLS,
which addresses may be dialled).  Knows nothing of the mirror's clients."""
