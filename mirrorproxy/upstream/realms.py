"""Which token services may receive an upstream's credentials.

A registry names its token service (the Bearer challenge's ``realm``), so a
registry that is not what it seems, or whatever answers in its place, could
name a host of its choosing and collect the account's password.  As
distribution's ``realmAllowed`` does, credentials go to a realm only on the
registry's own host (any port: nvcr.io's ``/proxy_auth``, ghcr.io's
``/token``) or on a host that shares its registrable domain
(``auth.docker.io`` for ``registry-1.docker.io``); never to an address
literal or ``localhost`` other than the registry's own, nor over http for an
https registry.  Other realms are asked for a token anonymously.

The registrable domain is approximated without the Public Suffix List: the
last two labels, or three under a country code's registration level
(``example.co.uk``); hosts under shared hosting suffixes share no domain at
all.  Every approximation errs the same way a missing entry would: at worst
a realm that could have had the credentials gets an anonymous request.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from .egress.hosts import is_ip, normal_host

# Labels under which country-code domains are registered (co.uk, com.au,
# or.jp, ...): the domain is one label further in.
_REGISTRATION_LEVELS = frozenset(
    {"ac", "co", "com", "edu", "go", "gob", "gov", "gv", "ltd", "me", "mil", "ne", "net", "nic", "nom", "or", "org", "plc", "sch"}
)
# Suffixes under which unrelated parties get names of their own; two hosts
# under one share nothing but the provider.
_SHARED_HOSTING = frozenset(
    {
        "amazonaws.com",
        "appspot.com",
        "azurecr.io",
        "azurewebsites.net",
        "cloudfront.net",
        "firebaseapp.com",
        "fly.dev",
        "github.io",
        "gitlab.io",
        "herokuapp.com",
        "netlify.app",
        "ngrok.app",
        "ngrok.io",
        "onrender.com",
        "pages.dev",
        "run.app",
        "vercel.app",
        "web.app",
        "workers.dev",
    }
)


def registrable_domain(host: str) -> str | None:
    """The domain `host` was registered under, as far as it can be told
    without the Public Suffix List; None for an address, a single label, or
    a host under a shared hosting suffix."""
    host = normal_host(host)
    if is_ip(host):
        return None
    labels = host.split(".")
    if ".".join(labels[-2:]) in _SHARED_HOSTING:
        return None
    length = 3 if len(labels[-1]) == 2 and len(labels) >= 2 and labels[-2] in _REGISTRATION_LEVELS else 2
    if len(labels) < length:
        return None
    return ".".join(labels[-length:])


def realm_allowed(registry_url: str, realm_url: str) -> bool:
    """Whether the registry at `registry_url` may have its credentials sent
    to the token service at `realm_url`."""
    try:
        registry, realm = urlsplit(registry_url), urlsplit(realm_url)
        registry_host = normal_host(registry.hostname or "")
        realm_host = normal_host(realm.hostname or "")
    except ValueError:
        return False
    if not registry_host or not realm_host or realm.scheme not in ("http", "https"):
        return False
    if registry.scheme == "https" and realm.scheme != "https":
        return False
    if registry_host == realm_host:
        return True
    if "localhost" in (registry_host, realm_host):
        return False
    domain = registrable_domain(registry_host)
    return domain is not None and domain == registrable_domain(realm_host)
