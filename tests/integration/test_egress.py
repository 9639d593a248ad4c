"""Egress through a real forward proxy to a real TLS registry.

The mirror's own upstream client (UpstreamClient + Authenticator, as
service.build_mirror wires them) runs over `make_agent` in this process,
against tinyproxy with Basic authentication in front of the reference
registry serving TLS with a certificate from a throwaway CA. The registry's
token service is plain http, so a pull uses both routes: CONNECT tunnels to
the registry and absolute-form requests for tokens.

What a user would notice is asserted: the digests of what was pulled, the
proxy's log of tunnels and requests (it saw the CONNECT; one tunnel carried
every registry request), the registry's access log (it saw nothing when TLS
or the proxy refused), and errors that name the proxy's status or the TLS
failure without the proxy password.

That the proxy is the only way out is shown with `twistd mirrorproxy` in a
network namespace of its own (harness.netns): inside it only its loopback,
plus two bridges, one to the proxy's port and one for clients to reach the
mirror; the registry and the token service listen on the host's 127.0.0.1,
which the namespace cannot reach. Through the proxy the pull succeeds and
the proxy logs the CONNECT; without it the same mirror answers its
UNAVAILABLE error and the registry sees nothing.
"""

from __future__ import annotations

import hashlib
import json
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
import treq
from attrs import define
from treq.client import HTTPClient
from twisted.web.client import HTTPConnectionPool

from mirrorproxy.registry.names import Digest
from mirrorproxy.upstream.auth import Authenticator
from mirrorproxy.upstream.client import UpstreamClient
from mirrorproxy.upstream.egress import ProxySettings, make_agent, proxy_settings
from mirrorproxy.upstream.errors import UpstreamUnavailable
from mirrorproxy.upstream.settings import Timeouts
from mirrorproxy.upstream.settings import UpstreamRegistry as Upstream

from ..testca import TestCA
from .conftest import show_log_on_failure
from .harness.forwardproxy import ForwardProxy
from .harness.mirror import Mirror
from .harness.netns import Bridge, NetworkNamespace, open_namespace
from .harness.oci import HOST, Image
from .harness.publish import ACCEPT_MANIFESTS, Publisher
from .harness.registry import UpstreamRegistry
from .harness.skopeo import Skopeo
from .harness.tlsregistry import TLSRegistry
from .harness.tokens import TokenIssuer
from .harness.tools import require_root, require_tool
from .harness.verify import assert_dir_copy

pytestmark = pytest.mark.integration

PROXY_CREDENTIALS = ("mirror", "proxy-pass-7Qx")
WRONG_PASSWORD = "not-the-password-3Zk"


@pytest.fixture(scope="module")
def test_ca() -> TestCA:
    return TestCA.generate()


@pytest.fixture(scope="module")
def tls_registry_process(
    upstream_registry: UpstreamRegistry,
    issuer: TokenIssuer,
    test_ca: TestCA,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[TLSRegistry]:
    binary = require_tool("docker-registry", "docker-registry")
    registry = TLSRegistry.start(
        binary, issuer, upstream_registry, test_ca, tmp_path_factory.mktemp("tls-upstream")
    )
    yield registry
    registry.stop()


@pytest.fixture(scope="module")
def proxy_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ForwardProxy]:
    binary = require_tool("tinyproxy", "tinyproxy")
    proxy = ForwardProxy.start(binary, tmp_path_factory.mktemp("proxy"), PROXY_CREDENTIALS)
    yield proxy
    proxy.stop()


@pytest.fixture
def tls_registry(tls_registry_process: TLSRegistry, request: pytest.FixtureRequest) -> TLSRegistry:
    show_log_on_failure(request, "TLS registry log", tls_registry_process.access.process.log_path)
    show_log_on_failure(request, "TLS registry access log", tls_registry_process.access.access_log)
    return tls_registry_process


@pytest.fixture
def proxy(proxy_process: ForwardProxy, request: pytest.FixtureRequest) -> ForwardProxy:
    show_log_on_failure(request, "tinyproxy log", proxy_process.log_path)
    return proxy_process


@pytest.fixture
def image(publisher: Publisher, unique: Callable[[str], str]) -> Image:
    """A small image, pushed to the plain upstream, served by the TLS one too."""
    return publisher.image(f"egress/{unique('img')}", "v1", {HOST: (96 * 1024, 32 * 1024)})


@define(eq=False)
class Puller:
    """The mirror's upstream client over `make_agent`, wired as
    service.build_mirror wires it, on the reactor pytest-twisted runs."""

    client: UpstreamClient
    pool: HTTPConnectionPool

    @classmethod
    def build(cls, url: str, **egress: Any) -> Puller:
        from twisted.internet import reactor

        pool = HTTPConnectionPool(reactor, persistent=True)
        agent = make_agent(reactor, pool, connect_timeout=10.0, **egress)
        client: UpstreamClient

        async def fetch_token(token_url: str, headers: dict[str, str]) -> tuple[int, bytes]:
            return await client.token_fetch(token_url, headers)

        auth = Authenticator(fetch_token, reactor, None)
        timeouts = Timeouts(connect=10.0, headers=30.0, body_silence=30.0)
        client = UpstreamClient(Upstream.from_url(url), HTTPClient(agent), reactor, auth, timeouts)
        return cls(client, pool)

    async def pull(self, image: Image) -> dict[str, str]:
        """Manifest by tag, then every blob: digest -> sha256 of the bytes that came."""
        try:
            manifest = await self.client.get_manifest(
                image.name, image.tag, ACCEPT_MANIFESTS.split(", ")
            )
            pulled = {str(manifest.digest): "sha256:" + hashlib.sha256(manifest.body).hexdigest()}
            for blob in image.blobs():
                response = await self.client.get_blob(image.name, Digest.parse(blob.digest))
                data = await treq.content(response)
                pulled[blob.digest] = "sha256:" + hashlib.sha256(data).hexdigest()
            return pulled
        finally:
            await self.pool.closeCachedConnections()

    async def refused(self, image: Image) -> str:
        """Pull, expecting the upstream client's 502-class error; its message."""
        with pytest.raises(UpstreamUnavailable) as raised:
            await self.pull(image)
        return str(raised.value)


def whole(image: Image) -> dict[str, str]:
    return {image.digest: image.digest} | {b.digest: b.digest for b in image.blobs()}


@pytest_twisted.ensureDeferred
async def test_pull_through_the_authenticating_proxy_to_the_tls_registry(
    tls_registry: TLSRegistry, proxy: ForwardProxy, issuer: TokenIssuer, image: Image
) -> None:
    proxy_mark, registry_mark = proxy.mark(), tls_registry.access.mark()
    tokens_before = issuer.count(scope=f"repository:{image.name}:pull")
    puller = Puller.build(
        tls_registry.url,
        proxy=ProxySettings.from_url(proxy.url()),
        ca_file=str(tls_registry.ca_bundle),
    )
    assert await puller.pull(image) == whole(image)

    # The proxy saw one CONNECT to the registry, and only that: the pooled
    # tunnel carried every registry request (the 401 challenge, the manifest
    # and each blob), TLS end to end inside it.
    registry_requests = tls_registry.access.requests(registry_mark)
    assert len(registry_requests) == 2 + len(image.blobs())
    assert proxy.connects(proxy_mark) == [f"localhost:{tls_registry.port}"]
    # The token came through the proxy too, as an absolute-form request.
    forwarded = [r for r in proxy.requests(proxy_mark) if r.method != "CONNECT"]
    assert [r.method for r in forwarded] == ["GET"]
    assert forwarded[0].target.startswith(issuer.realm + "?")
    assert issuer.count(scope=f"repository:{image.name}:pull") == tokens_before + 1


@pytest_twisted.ensureDeferred
async def test_without_the_test_ca_the_registry_certificate_is_refused(
    tls_registry: TLSRegistry, proxy: ForwardProxy, image: Image
) -> None:
    proxy_mark, registry_mark = proxy.mark(), tls_registry.access.mark()
    puller = Puller.build(tls_registry.url, proxy=ProxySettings.from_url(proxy.url()))
    message = await puller.refused(image)
    assert message.startswith(
        f"cannot reach localhost:{tls_registry.port}: TLS with localhost:{tls_registry.port} "
        "failed: certificate verify failed (not signed by a trusted CA"
    ), message
    # Through the proxy, then refused by our TLS check: the registry answered nothing.
    assert proxy.connects(proxy_mark) == [f"localhost:{tls_registry.port}"]
    assert tls_registry.access.requests(registry_mark) == []


@pytest_twisted.ensureDeferred
async def test_the_certificate_must_name_the_host_asked_for(
    tls_registry: TLSRegistry, proxy: ForwardProxy, image: Image
) -> None:
    registry_mark = tls_registry.access.mark()
    # Same registry, same trusted CA, but asked for by an address that its
    # certificate (for "localhost" only) does not name.
    puller = Puller.build(
        tls_registry.url_by_address,
        proxy=ProxySettings.from_url(proxy.url()),
        ca_file=str(tls_registry.ca_bundle),
    )
    message = await puller.refused(image)
    assert message.endswith(
        f"TLS with 127.0.0.1:{tls_registry.port} failed: its certificate is not valid for that name"
    ), message
    assert tls_registry.access.requests(registry_mark) == []


@pytest_twisted.ensureDeferred
async def test_a_wrong_proxy_password_fails_with_the_proxy_status(
    tls_registry: TLSRegistry, proxy: ForwardProxy, image: Image
) -> None:
    registry_mark = tls_registry.access.mark()
    wrong = proxy.url((PROXY_CREDENTIALS[0], WRONG_PASSWORD))
    puller = Puller.build(
        tls_registry.url, proxy=ProxySettings.from_url(wrong), ca_file=str(tls_registry.ca_bundle)
    )
    message = await puller.refused(image)
    prefix = f"proxy 127.0.0.1:{proxy.port} answered CONNECT localhost:{tls_registry.port} with "
    assert prefix in message
    # 407; tinyproxy 1.11 says 401 to wrong credentials (see harness.forwardproxy).
    status = message.split(prefix)[1][:3]
    assert status in ("401", "407"), message
    assert message.endswith("(it refused the user and password of the proxy URL)"), message
    assert WRONG_PASSWORD not in message
    assert tls_registry.access.requests(registry_mark) == []


@pytest_twisted.ensureDeferred
async def test_a_wrong_proxy_password_for_an_http_upstream_is_the_proxy_refusing(
    upstream: UpstreamRegistry, proxy: ForwardProxy, image: Image
) -> None:
    """Requests for http:// URLs go to the proxy in absolute form, where a 401
    is usually the registry's challenge; tinyproxy 1.11's own 401 to a wrong
    password (see harness.forwardproxy) must not pass for one."""
    registry_mark = upstream.mark()
    wrong = proxy.url((PROXY_CREDENTIALS[0], WRONG_PASSWORD))
    message = await Puller.build(upstream.url, proxy=ProxySettings.from_url(wrong)).refused(image)
    prefix = f"proxy 127.0.0.1:{proxy.port} answered a request for {upstream.host} with "
    assert prefix in message, message
    # 401 from tinyproxy 1.11, 407 from later ones.
    assert message.split(prefix)[1][:3] in ("401", "407"), message
    assert message.endswith("(it refused the user and password of the proxy URL)"), message
    assert WRONG_PASSWORD not in message
    assert upstream.requests(registry_mark) == []

    # With the right password, the registry's own 401 through the same proxy
    # is still its token challenge, and the pull goes through.
    proxy_mark = proxy.mark()
    puller = Puller.build(upstream.url, proxy=ProxySettings.from_url(proxy.url()))
    assert await puller.pull(image) == whole(image)
    assert upstream.count("GET", f"/v2/{image.name}/manifests/{image.tag}", registry_mark) == 2
    assert [r.method for r in proxy.requests(proxy_mark)] == ["GET"] * (3 + len(image.blobs()))


@pytest_twisted.ensureDeferred
async def test_no_credentials_for_the_proxy_fails_with_407(
    tls_registry: TLSRegistry, proxy: ForwardProxy, image: Image
) -> None:
    puller = Puller.build(
        tls_registry.url,
        proxy=ProxySettings.from_url(proxy.url(anonymous=True)),
        ca_file=str(tls_registry.ca_bundle),
    )
    message = await puller.refused(image)
    assert "with 407 Proxy Authentication Required" in message
    assert message.endswith("(it wants credentials: put user:password@ in the proxy URL)")


@pytest_twisted.ensureDeferred
async def test_no_proxy_hosts_are_reached_directly(
    tls_registry: TLSRegistry, proxy: ForwardProxy, issuer: TokenIssuer, image: Image
) -> None:
    environ = {
        "HTTPS_PROXY": proxy.url(),
        "HTTP_PROXY": proxy.url(),
        # The registry by name, the token service by address.
        "NO_PROXY": "localhost, 127.0.0.1",
    }
    settings = proxy_settings(None, environ)
    assert settings is not None and settings.https is not None
    proxy_mark, registry_mark = proxy.mark(), tls_registry.access.mark()
    puller = Puller.build(tls_registry.url, proxy=settings, ca_file=str(tls_registry.ca_bundle))
    assert await puller.pull(image) == whole(image)
    assert proxy.requests(proxy_mark) == []
    assert len(tls_registry.access.requests(registry_mark)) == 2 + len(image.blobs())


@pytest_twisted.ensureDeferred
async def test_insecure_mode_pulls_without_the_ca(
    tls_registry: TLSRegistry, proxy: ForwardProxy, image: Image
) -> None:
    proxy_mark = proxy.mark()
    puller = Puller.build(tls_registry.url, proxy=ProxySettings.from_url(proxy.url()), verify=False)
    assert await puller.pull(image) == whole(image)
    assert proxy.connects(proxy_mark) == [f"localhost:{tls_registry.port}"]


def test_the_mirror_pulls_through_the_authenticating_proxy_as_deployed(
    tls_registry: TLSRegistry,
    proxy: ForwardProxy,
    image: Image,
    skopeo: Any,
    tmp_path: Any,
) -> None:
    """`twistd mirrorproxy --config` as the README's Deploy section sets it
    up: an https upstream reached only through an authenticating proxy, with
    a private CA; the proxy password lives in a 0600 config file."""
    import os

    config = tmp_path / "mirrorproxy.toml"
    config.write_text(
        f'upstream-proxy = "{proxy.url()}"\n'
        f'upstream-ca = "{tls_registry.ca_bundle}"\n'
    )
    os.chmod(config, 0o600)
    # From before the start: the mirror's probe of upstream opens the tunnel
    # the pull may then reuse.
    proxy_mark = proxy.mark()
    mirror = Mirror.start(
        tls_registry.url, tmp_path / "cache", tmp_path / "mirror.log", options=["--config", str(config)]
    )
    try:
        out = tmp_path / "out"
        skopeo.pull_to_dir(mirror.host, image.reference, out)
        assert_dir_copy(out, image)
        assert f"localhost:{tls_registry.port}" in proxy.connects(proxy_mark)
        log = (tmp_path / "mirror.log").read_text()
        assert PROXY_CREDENTIALS[1] not in log
    finally:
        mirror.stop()


def test_a_world_readable_config_with_a_proxy_password_is_refused(
    tls_registry: TLSRegistry, proxy: ForwardProxy, tmp_path: Any
) -> None:
    import os
    import subprocess

    from .harness.mirror import twistd

    config = tmp_path / "mirrorproxy.toml"
    config.write_text(f'upstream-proxy = "{proxy.url()}"\n')
    os.chmod(config, 0o644)
    result = subprocess.run(
        [twistd(), "-n", "--pidfile=", "mirrorproxy", "--config", str(config)],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )
    assert result.returncode != 0
    assert "readable by everyone" in result.stderr + result.stdout
    assert PROXY_CREDENTIALS[1] not in result.stderr + result.stdout


@pytest.fixture(scope="module")
def netns(
    proxy_process: ForwardProxy, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[NetworkNamespace]:
    """A network namespace whose one way out is a bridge to the proxy's port."""
    require_root("a network namespace")
    require_tool("ip", "iproute2")
    with open_namespace(tmp_path_factory.mktemp("netns")) as created:
        created.bridge_in(proxy_process.port)
        yield created


@pytest.fixture
def start_mirror_inside(
    netns: NetworkNamespace,
    tls_registry: TLSRegistry,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> Iterator[Callable[[str], Mirror]]:
    """``start_mirror_inside(config)``: `twistd mirrorproxy --config` (a 0600
    file holding ``config``) in the namespace, upstream the TLS registry,
    reached by this process through a bridge out as ``mirror.host``."""
    started: list[tuple[Mirror, Bridge]] = []

    def start(config_text: str) -> Mirror:
        config = tmp_path / f"mirrorproxy-{len(started)}.toml"
        config.write_text(config_text)
        config.chmod(0o600)
        log_path = tmp_path / f"mirror-{len(started)}.log"
        show_log_on_failure(request, f"mirror #{len(started)} (in the namespace) log", log_path)
        bridge = netns.bridge_out()
        try:
            mirror = Mirror.start(
                tls_registry.url,
                tmp_path / f"cache-{len(started)}",
                log_path,
                options=["--config", str(config)],
                port=bridge.port,
                command_prefix=netns.command,
            )
        except BaseException:
            bridge.stop()
            raise
        started.append((mirror, bridge))
        return mirror

    yield start
    errors = []
    for mirror, bridge in started:
        try:
            mirror.stop()
        except RuntimeError as error:
            errors.append(str(error))
        bridge.stop()
    assert not errors, "\n".join(errors)


def test_in_a_network_namespace_the_mirror_pulls_through_the_proxy(
    netns: NetworkNamespace,
    start_mirror_inside: Callable[[str], Mirror],
    tls_registry: TLSRegistry,
    proxy: ForwardProxy,
    issuer: TokenIssuer,
    image: Image,
    skopeo: Skopeo,
    tmp_path: Path,
) -> None:
    # From before the start: the mirror's probe of upstream goes through
    # the proxy too, and the pull may reuse its tunnel.
    proxy_mark = proxy.mark()
    mirror = start_mirror_inside(
        f'upstream-proxy = "{proxy.url()}"\nupstream-ca = "{tls_registry.ca_bundle}"\n'
    )
    assert netns.holds(mirror.process.pid)
    # From where the mirror runs, neither the registry nor the token service
    # can be reached; the proxy's port can, through the bridge.
    assert netns.reaches(tls_registry.port) == "ECONNREFUSED"
    assert netns.reaches(issuer.port) == "ECONNREFUSED"
    assert netns.reaches(proxy.port) == "connected"

    registry_mark = tls_registry.access.mark()
    tokens_before = issuer.count(scope=f"repository:{image.name}:pull")
    out = tmp_path / "out"
    skopeo.pull_to_dir(mirror.host, image.reference, out)
    assert_dir_copy(out, image)

    # Every byte came from the registry, through tunnels the proxy opened:
    # CONNECTs to the registry, absolute-form GETs to the token service.
    for blob in image.blobs():
        assert tls_registry.access.blob_fetches(image.name, blob.digest, registry_mark) == 1
    connects = proxy.connects(proxy_mark)
    assert connects and set(connects) == {f"localhost:{tls_registry.port}"}, connects
    forwarded = [r for r in proxy.requests(proxy_mark) if r.method != "CONNECT"]
    assert forwarded and all(
        r.method == "GET" and r.target.startswith(issuer.realm + "?") for r in forwarded
    ), forwarded
    assert issuer.count(scope=f"repository:{image.name}:pull") > tokens_before
    assert PROXY_CREDENTIALS[1] not in mirror.process.log_path.read_text()


def test_in_a_network_namespace_without_the_proxy_the_registry_is_unreachable(
    netns: NetworkNamespace,
    start_mirror_inside: Callable[[str], Mirror],
    tls_registry: TLSRegistry,
    proxy: ForwardProxy,
    issuer: TokenIssuer,
    image: Image,
) -> None:
    # The same mirror, the same upstream and CA, no proxy.
    mirror = start_mirror_inside(f'upstream-ca = "{tls_registry.ca_bundle}"\n')
    assert netns.holds(mirror.process.pid)
    proxy_mark, registry_mark = proxy.mark(), tls_registry.access.mark()
    tokens_before = issuer.count()

    status, _, body = mirror.get(f"/v2/{image.name}/manifests/{image.tag}", timeout=60)
    assert status == 502, body
    [error] = json.loads(body)["errors"]
    assert error["code"] == "UNAVAILABLE", error
    assert f"cannot reach localhost:{tls_registry.port}" in error["message"], error
    assert "refused" in error["message"].lower(), error

    # Nothing reached the registry, the token service or the proxy ...
    assert tls_registry.access.requests(registry_mark) == []
    assert issuer.count() == tokens_before
    assert proxy.requests(proxy_mark) == []
    # ... though the registry is up and answers on the host.
    socket.create_connection(("127.0.0.1", tls_registry.port), timeout=5).close()
    assert netns.reaches(tls_registry.port) == "ECONNREFUSED"
