"""Upstream authentication: challenge parsing, the token cache, Basic credentials.

Counts at the fake upstream are what a user notices: every needless token
request or 401 round trip is latency, and tokens must never leak to the CDN.
"""

from __future__ import annotations

import base64
import json
from urllib.parse import parse_qs, urlsplit

import attrs
import pytest
from attrs import define, field
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.logger import capturedLogs
from twisted.python.failure import Failure

from mirrorproxy.upstream.auth import (
    Authenticator,
    AuthError,
    Challenge,
    parse_challenges,
)
from mirrorproxy.upstream.realms import realm_allowed
from mirrorproxy.upstream.settings import Credentials

from ..fakeregistry import AUTH_HOST, CDN_HOST, REGISTRY_HOST, FakeRegistry
from .harness import Harness

# -- WWW-Authenticate parsing -----------------------------------------------------


def test_docker_hub_bearer_challenge():
    header = (
        'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
        'scope="repository:library/alpine:pull"'
    )
    assert parse_challenges(header) == [
        Challenge(
            "bearer",
            {
                "realm": "https://auth.docker.io/token",
                "service": "registry.docker.io",
                "scope": "repository:library/alpine:pull",
            },
        )
    ]
    assert parse_challenges(header)[0].realm == "https://auth.docker.io/token"


def test_comma_inside_quoted_value_does_not_split_it():
    (challenge,) = parse_challenges(
        'Bearer realm="https://a.example/token",scope="repository:x/y:pull,push",error="insufficient_scope"'
    )
    assert challenge.params == {
        "realm": "https://a.example/token",
        "scope": "repository:x/y:pull,push",
        "error": "insufficient_scope",
    }


def test_spaces_around_params_and_case_of_scheme_and_names():
    (challenge,) = parse_challenges('BEARER  Realm = "https://a.example/t" ,  Service="svc"')
    assert challenge.scheme == "bearer"
    assert challenge.params == {"realm": "https://a.example/t", "service": "svc"}


def test_escaped_quote_inside_quoted_value():
    (challenge,) = parse_challenges(r'Basic realm="say \"hi\", please"')
    assert challenge == Challenge("basic", {"realm": 'say "hi", please'})


def test_basic_challenge():
    assert parse_challenges('Basic realm="Registry Realm"') == [
        Challenge("basic", {"realm": "Registry Realm"})
    ]


def test_bare_scheme_without_params():
    assert parse_challenges("Basic") == [Challenge("basic", {})]


def test_multiple_challenges_in_one_header():
    """RFC 7235's own example: each challenge keeps its own params."""
    header = 'Newauth realm="apps", type=1, title="Login to \\"apps\\"", Basic realm="simple"'
    assert parse_challenges(header) == [
        Challenge("newauth", {"realm": "apps", "type": "1", "title": 'Login to "apps"'}),
        Challenge("basic", {"realm": "simple"}),
    ]


def test_basic_then_bearer_with_quoted_commas():
    header = 'Basic realm="r1", Bearer realm="https://t.example/token",scope="a:b:pull,push"'
    assert parse_challenges(header) == [
        Challenge("basic", {"realm": "r1"}),
        Challenge("bearer", {"realm": "https://t.example/token", "scope": "a:b:pull,push"}),
    ]


def test_parameterless_challenge_before_bearer():
    assert parse_challenges('Negotiate, Bearer realm="https://t.example/token"') == [
        Challenge("negotiate", {}),
        Challenge("bearer", {"realm": "https://t.example/token"}),
    ]


def test_empty_header_has_no_challenges():
    assert parse_challenges("") == []


# -- the token cache, through the mirror -----------------------------------------

REPO = "library/alpine"


def blob_path(digest: str, repository: str = REPO) -> str:
    return f"/v2/{repository}/blobs/{digest}"


def token_requests(harness: Harness) -> int:
    return harness.registry.count("GET", "/token", host=AUTH_HOST)


@pytest.fixture
def tokens(harness):
    harness.registry.require_token = True
    return harness


def test_first_request_fetches_one_token_and_retries_with_it(tokens):
    digest = tokens.registry.add_blob(b"layer")
    response = tokens.head(blob_path(digest))

    assert response.status == 200
    assert response.headers["content-length"] == "5"
    assert token_requests(tokens) == 1 and tokens.registry.issued == 1
    # One 401, then one authorised request.
    heads = [s for s in tokens.registry.seen if s.host == REGISTRY_HOST]
    assert [s.headers.get("authorization", "")[:10] for s in heads] == ["", "Bearer tok"]
    (token_request,) = [s for s in tokens.registry.seen if s.host == AUTH_HOST]
    assert token_request.method == "GET"


def test_token_request_names_service_and_scope(tokens):
    digest = tokens.registry.add_blob(b"layer")
    tokens.head(blob_path(digest))
    # The fake echoes the scope into the token; the mirror must present it.
    (authorised,) = [s for s in tokens.registry.seen if s.host == REGISTRY_HOST and "authorization" in s.headers]
    assert authorised.headers["authorization"] == f"Bearer tok-1-repository:{REPO}:pull"


def test_later_requests_reuse_the_token_without_a_401_round_trip(tokens):
    digest = tokens.registry.add_blob(b"layer")
    tokens.head(blob_path(digest))
    before = tokens.registry.count("HEAD", "/blobs/")

    tokens.clock.advance(100)
    for _ in range(3):
        assert tokens.head(blob_path(digest)).status == 200

    assert tokens.registry.issued == 1
    # Exactly one upstream request per client request: no 401 first.
    assert tokens.registry.count("HEAD", "/blobs/") - before == 3


def test_expired_token_is_replaced_by_exactly_one_new_one(tokens):
    tokens.registry.token_lifetime = 300
    digest = tokens.registry.add_blob(b"layer")
    tokens.head(blob_path(digest))
    tokens.clock.advance(200)
    tokens.head(blob_path(digest))
    assert tokens.registry.issued == 1

    tokens.clock.advance(101)  # 301 s after the token was issued
    assert tokens.head(blob_path(digest)).status == 200
    assert tokens.head(blob_path(digest)).status == 200

    assert tokens.registry.issued == 2
    assert token_requests(tokens) == 2


def test_token_without_expires_in_lives_60_seconds(tokens):
    tokens.registry.token_lifetime = None
    digest = tokens.registry.add_blob(b"layer")
    tokens.head(blob_path(digest))
    tokens.clock.advance(30)
    tokens.head(blob_path(digest))
    assert tokens.registry.issued == 1

    tokens.clock.advance(31)  # 61 s
    tokens.head(blob_path(digest))
    assert tokens.registry.issued == 2


def test_each_repository_gets_its_own_scoped_token(tokens):
    first = tokens.registry.add_blob(b"one")
    second = tokens.registry.add_blob(b"two")
    tokens.head(blob_path(first, "library/alpine"))
    tokens.head(blob_path(second, "library/busybox"))
    tokens.head(blob_path(first, "library/alpine"))
    tokens.head(blob_path(second, "library/busybox"))

    scopes = sorted(
        s.headers["authorization"].split("-", 2)[2]
        for s in tokens.registry.seen
        if s.host == REGISTRY_HOST and "authorization" in s.headers
    )
    assert tokens.registry.issued == 2
    assert scopes == sorted(["repository:library/alpine:pull"] * 2 + ["repository:library/busybox:pull"] * 2)


def test_token_rejected_before_expiry_is_replaced_once(tmp_path):
    harness = Harness(str(tmp_path / "cache"))
    harness.registry.require_token = True
    digest = harness.registry.add_blob(b"layer")
    harness.head(blob_path(digest))
    harness.registry.revoked_tokens.add(f"tok-1-repository:{REPO}:pull")
    before = harness.registry.count("HEAD", "/blobs/")

    first = harness.head(blob_path(digest))
    second = harness.head(blob_path(digest))

    assert (first.status, second.status) == (200, 200)
    assert harness.registry.issued == 2
    # 401 with the revoked token, retry with the new one, then straight through.
    assert harness.registry.count("HEAD", "/blobs/") - before == 3


@pytest.fixture
def slow_tokens(tmp_path):
    harness = Harness(str(tmp_path / "cache"), registry=FakeRegistry(hold_tokens=True))
    harness.registry.require_token = True
    return harness


def test_concurrent_cold_requests_share_one_token_request(slow_tokens):
    harness = slow_tokens
    digests = [harness.registry.add_blob(bytes([i]) * 10) for i in range(5)]

    clients = [harness.send("HEAD", blob_path(d)) for d in digests]
    harness.pump()
    assert [c.response() for c in clients] == [None] * 5  # all waiting for the token
    harness.registry.release_tokens()
    harness.pump()

    assert [c.response().status for c in clients] == [200] * 5
    assert harness.registry.issued == 1


def test_concurrent_requests_after_expiry_share_one_new_token(slow_tokens):
    harness = slow_tokens
    digests = [harness.registry.add_blob(bytes([i]) * 10) for i in range(5)]
    harness.registry.hold_tokens = False
    harness.head(blob_path(digests[0]))
    harness.clock.advance(1000)
    harness.registry.hold_tokens = True

    clients = [harness.send("HEAD", blob_path(d)) for d in digests]
    harness.pump()
    assert [c.response() for c in clients] == [None] * 5
    harness.registry.release_tokens()
    harness.pump()

    assert [c.response().status for c in clients] == [200] * 5
    assert harness.registry.issued == 2
    # With the challenge known, nobody needed a 401 first.
    assert harness.registry.count("HEAD", "/blobs/") == 2 + 5


def test_concurrent_requests_for_two_scopes_get_two_tokens(slow_tokens):
    harness = slow_tokens
    first = harness.registry.add_blob(b"one")
    second = harness.registry.add_blob(b"two")

    clients = [
        harness.send("HEAD", blob_path(first, "library/alpine")),
        harness.send("HEAD", blob_path(second, "library/busybox")),
        harness.send("HEAD", blob_path(first, "library/alpine")),
    ]
    harness.pump()
    harness.registry.release_tokens()
    harness.pump()

    assert [c.response().status for c in clients] == [200] * 3
    assert harness.registry.issued == 2


def test_cdn_redirect_carries_no_authorization(tokens):
    tokens.registry.redirect_blobs = True
    data = b"x" * 10_000
    digest = tokens.registry.add_blob(data)

    response = tokens.get(blob_path(digest))

    assert (response.status, response.body) == (200, data)
    registry_gets = [s for s in tokens.registry.seen if s.host == REGISTRY_HOST and s.method == "GET"]
    cdn_gets = [s for s in tokens.registry.seen if s.host == CDN_HOST]
    assert registry_gets[-1].headers["authorization"].startswith("Bearer tok-")
    assert len(cdn_gets) == 1
    assert "authorization" not in cdn_gets[0].headers


def token_service_answers(harness: Harness, status: int) -> None:
    """Every token request gets ``status``; the registry answers as before."""
    harness.registry.status_override = lambda seen: status if seen.host == AUTH_HOST else None


@pytest.mark.parametrize(
    ("token_status", "status", "code"),
    [
        pytest.param(503, 502, "UNAVAILABLE", id="outage-is-unavailable-not-denied"),
        pytest.param(429, 429, "TOOMANYREQUESTS", id="rate-limit-is-toomanyrequests"),
        pytest.param(401, 403, "DENIED", id="refusal-is-denied"),
    ],
)
def test_token_service_failure_is_a_registry_error(tokens, token_status, status, code):
    token_service_answers(tokens, token_status)
    digest = tokens.registry.add_blob(b"layer")

    response = tokens.get(blob_path(digest))

    assert response.status == status
    assert response.json()["errors"][0]["code"] == code
    assert tokens.registry.count("GET", "/blobs/") == 1  # never retried without a token
    assert tokens.registry.count("GET", "/data/", host=CDN_HOST) == 0


def test_failed_token_request_is_not_cached(tokens):
    """After the token service recovers, the next request gets a token and succeeds."""
    token_service_answers(tokens, 401)
    digest = tokens.registry.add_blob(b"layer")
    assert tokens.head(blob_path(digest)).status == 403

    tokens.registry.status_override = None
    assert tokens.head(blob_path(digest)).status == 200
    assert tokens.registry.issued == 1


def test_bearer_challenge_in_a_second_header_line_is_answered(tmp_path):
    # Challenges in two header lines, the Bearer one second, as registries
    # behind some proxies send them.
    harness = Harness(str(tmp_path / "cache"), registry=FakeRegistry(extra_challenges=['Basic realm="proxy"']))
    harness.registry.require_token = True
    digest = harness.registry.add_blob(b"layer")

    response = harness.head(blob_path(digest))

    assert response.status == 200
    assert harness.registry.issued == 1


# -- Basic credentials -----------------------------------------------------------


def with_credentials(harness: Harness, credentials: Credentials | None) -> Harness:
    """The harness's mirror rebuilt with upstream credentials (Harness has no field for them)."""
    harness.settings = attrs.evolve(harness.settings, credentials=credentials)
    harness.build()
    return harness


def basic(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


def test_basic_challenge_answered_with_configured_credentials(harness):
    with_credentials(harness, Credentials("user", "s3cret"))
    harness.registry.basic_auth = ("user", "s3cret")
    digest = harness.registry.add_blob(b"layer")

    assert harness.head(blob_path(digest)).status == 200
    assert harness.head(blob_path(digest)).status == 200

    seen = [s.headers.get("authorization") for s in harness.registry.seen]
    # One 401, then Basic on every request, including the next one up front.
    assert seen == [None, basic("user", "s3cret"), basic("user", "s3cret")]
    assert harness.registry.issued == 0


@pytest.mark.parametrize(
    ("credentials", "blob_gets"),
    [
        pytest.param(None, 1, id="without-credentials"),
        pytest.param(Credentials("user", "wrong"), 2, id="wrong-credentials-after-one-retry"),
    ],
)
def test_basic_challenge_not_met_is_denied(harness, credentials, blob_gets):
    with_credentials(harness, credentials)
    harness.registry.basic_auth = ("user", "s3cret")
    digest = harness.registry.add_blob(b"layer")

    response = harness.get(blob_path(digest))

    assert response.status == 403
    assert response.json()["errors"][0]["code"] == "DENIED"
    assert harness.registry.count("GET", "/blobs/") == blob_gets


def test_credentials_go_to_the_token_service_not_the_registry(harness):
    with_credentials(harness, Credentials("user", "s3cret"))
    harness.registry.require_token = True
    digest = harness.registry.add_blob(b"layer")

    assert harness.head(blob_path(digest)).status == 200

    (token_request,) = [s for s in harness.registry.seen if s.host == AUTH_HOST]
    assert token_request.headers["authorization"] == basic("user", "s3cret")
    registry_auth = [s.headers.get("authorization") for s in harness.registry.seen if s.host == REGISTRY_HOST]
    assert registry_auth[0] is None
    assert registry_auth[1].startswith("Bearer tok-")


def test_basic_credentials_never_reach_the_cdn(harness):
    with_credentials(harness, Credentials("user", "s3cret"))
    harness.registry.basic_auth = ("user", "s3cret")
    harness.registry.redirect_blobs = True
    data = b"y" * 5000
    digest = harness.registry.add_blob(data)

    response = harness.get(blob_path(digest))

    assert (response.status, response.body) == (200, data)
    (cdn,) = [s for s in harness.registry.seen if s.host == CDN_HOST]
    assert "authorization" not in cdn.headers


# -- the Authenticator on its own, with a recording token fetcher ------------------


@define(eq=False)
class TokenService:
    """Answers token requests with a fixed document; records the URLs asked."""

    document: dict[str, object]
    status: int = 200
    asked: list[tuple[str, dict[str, str]]] = field(factory=list)

    async def fetch(self, url: str, headers: dict[str, str]) -> tuple[int, bytes]:
        self.asked.append((url, headers))
        return self.status, json.dumps(self.document).encode()


def authorization(authenticator: Authenticator, scope: str = "repository:a/b:pull") -> str | None:
    d = Deferred.fromCoroutine(authenticator.authorization(scope))
    results: list[object] = []
    d.addBoth(results.append)
    (result,) = results
    if isinstance(result, Failure):
        result.raiseException()
    return result  # type: ignore[return-value]


def test_no_header_before_any_challenge():
    service = TokenService({"token": "t"})
    assert authorization(Authenticator(service.fetch, Clock())) is None
    assert service.asked == []


def test_realm_with_its_own_query_keeps_it():
    service = TokenService({"token": "t"})
    authenticator = Authenticator(service.fetch, Clock())
    assert authenticator.learn('Bearer realm="https://auth.example/jwt?account=x",service="reg"')

    assert authorization(authenticator) == "Bearer t"

    (url, headers), = service.asked
    parts = urlsplit(url)
    assert (parts.scheme, parts.netloc, parts.path) == ("https", "auth.example", "/jwt")
    assert parse_qs(parts.query) == {
        "account": ["x"],
        "service": ["reg"],
        "scope": ["repository:a/b:pull"],
    }
    assert "Authorization" not in headers


def test_access_token_field_is_accepted():
    service = TokenService({"access_token": "oauth-style"})
    authenticator = Authenticator(service.fetch, Clock())
    authenticator.learn('Bearer realm="https://auth.example/token"')
    assert authorization(authenticator) == "Bearer oauth-style"


@pytest.mark.parametrize("document", [{}, {"token": ""}, {"token": 5}, {"token": "t", "expires_in": "soon"}])
def test_unusable_token_answer_is_refused_and_not_cached(document):
    service = TokenService(document)
    authenticator = Authenticator(service.fetch, Clock())
    authenticator.learn('Bearer realm="https://auth.example/token"')

    with pytest.raises(AuthError):
        authorization(authenticator)
    service.document = {"token": "good"}
    assert authorization(authenticator) == "Bearer good"


@pytest.mark.parametrize("realm", ["file:///etc/passwd", "ftp://auth.example/token", "/relative/token"])
def test_non_http_realm_is_never_fetched(realm):
    service = TokenService({"token": "t"})
    authenticator = Authenticator(service.fetch, Clock())
    authenticator.learn(f'Bearer realm="{realm}"')

    with pytest.raises(AuthError):
        authorization(authenticator)
    assert service.asked == []


def test_bearer_challenge_without_realm_cannot_be_answered():
    authenticator = Authenticator(TokenService({"token": "t"}).fetch, Clock())
    assert not authenticator.learn('Bearer service="reg"')
    assert not authenticator.knows_challenge


def test_basic_challenge_without_credentials_cannot_be_answered():
    authenticator = Authenticator(TokenService({"token": "t"}).fetch, Clock())
    assert not authenticator.learn('Basic realm="x"')


def test_token_is_refreshed_before_it_expires_upstream():
    """A token used right up to expires_in could expire on its way upstream."""
    clock = Clock()
    service = TokenService({"token": "t", "expires_in": 100})
    authenticator = Authenticator(service.fetch, clock)
    authenticator.learn('Bearer realm="https://auth.example/token"')
    authorization(authenticator)

    clock.advance(99)
    authorization(authenticator)

    assert len(service.asked) == 2


# -- which token services get the credentials (distribution's realmAllowed) ---------


@pytest.mark.parametrize(
    ("registry", "realm", "allowed"),
    [
        pytest.param("https://registry-1.docker.io", "https://auth.docker.io/token", True, id="docker-hub"),
        pytest.param("https://ghcr.io", "https://ghcr.io/token", True, id="ghcr-same-host"),
        pytest.param("https://nvcr.io", "https://nvcr.io/proxy_auth", True, id="nvcr-own-path"),
        pytest.param("https://registry.gitlab.com", "https://gitlab.com/jwt/auth", True, id="parent-domain"),
        pytest.param("https://registry.example.co.uk", "https://auth.example.co.uk/t", True, id="country-level"),
        pytest.param("http://127.0.0.1:5000", "http://127.0.0.1:5001/token", True, id="same-address-other-port"),
        pytest.param("https://REGISTRY.example.com.", "https://registry.example.com/t", True, id="spelling"),
        pytest.param("https://registry-1.docker.io", "https://auth.docker.io.evil.example/t", False, id="lookalike"),
        pytest.param("https://registry-1.docker.io", "https://tokens.example/t", False, id="foreign"),
        pytest.param("https://registry.example.co.uk", "https://evil.co.uk/t", False, id="country-level-neighbour"),
        pytest.param("https://team.github.io", "https://attacker.github.io/t", False, id="shared-hosting"),
        pytest.param("http://10.0.0.1:5000", "http://10.0.0.2/token", False, id="other-address"),
        pytest.param("http://localhost:5000", "http://127.0.0.1/token", False, id="localhost-to-address"),
        pytest.param("https://registry.example.com", "http://auth.example.com/t", False, id="https-down-to-http"),
        pytest.param("https://registry.example.com", "ftp://registry.example.com/t", False, id="not-http"),
    ],
)
def test_realm_allowed(registry, realm, allowed):
    assert realm_allowed(registry, realm) is allowed


@pytest.fixture
def foreign_realm(tmp_path):
    """A registry whose challenge names a token service on another domain."""
    registry = FakeRegistry(require_token=True, realm="http://tokens.elsewhere.example/token")
    return with_credentials(Harness(str(tmp_path / "cache"), registry=registry), Credentials("user", "s3cret"))


def test_a_token_service_on_another_domain_is_asked_without_the_credentials(foreign_realm):
    harness = foreign_realm
    first, second = harness.registry.add_blob(b"one"), harness.registry.add_blob(b"two")

    with capturedLogs() as events:
        assert harness.head(blob_path(first, "library/alpine")).status == 200
        assert harness.head(blob_path(second, "library/busybox")).status == 200

    asked = [s for s in harness.registry.seen if s.path == "/token"]
    assert [s.host for s in asked] == ["tokens.elsewhere.example"] * 2
    assert [s.headers.get("authorization") for s in asked] == [None, None]
    warnings = [e for e in events if "not on its domain" in e.get("log_format", "")]
    assert [(e["registry"], e["realm"]) for e in warnings] == [  # once, not once per token
        (REGISTRY_HOST, "http://tokens.elsewhere.example")
    ]


def test_a_token_service_on_the_registrys_domain_gets_the_credentials(tmp_path):
    registry = FakeRegistry(require_token=True, realm=f"http://{AUTH_HOST}/token")
    harness = with_credentials(Harness(str(tmp_path / "cache"), registry=registry), Credentials("user", "s3cret"))
    digest = registry.add_blob(b"layer")

    assert harness.head(blob_path(digest)).status == 200

    (asked,) = [s for s in registry.seen if s.path == "/token"]
    assert asked.headers["authorization"] == basic("user", "s3cret")


def test_a_token_service_redirecting_elsewhere_loses_the_credentials(tmp_path):
    registry = FakeRegistry(require_token=True)
    registry.redirect("/token", "http://tokens.elsewhere.example/issue")
    registry.canned["/issue"] = (200, {"Content-Type": "application/json"}, b'{"token": "tok-elsewhere"}')
    harness = with_credentials(Harness(str(tmp_path / "cache"), registry=registry), Credentials("user", "s3cret"))
    digest = registry.add_blob(b"layer")

    assert harness.head(blob_path(digest)).status == 200

    (realm,) = [s for s in registry.seen if s.path == "/token"]
    (issuer,) = [s for s in registry.seen if s.path == "/issue"]
    assert realm.headers["authorization"] == basic("user", "s3cret")
    assert "authorization" not in issuer.headers
