"""Peer 2: nginx as a registry cache, configured the way nginx-based registry
mirrors do it (rpardini/docker-registry-proxy's caching layer): blobs and
manifests by digest cached for 60 days under keys that ignore the
repository, manifests by tag cached for the tag TTL, ``proxy_cache_lock on``
with a long lock timeout so concurrent misses wait for one fetch, GET and
HEAD cached (HEAD answered from the cached GET), sendfile on.

It owns nginx's config file, directories and process.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from attrs import define

from tests.integration.harness.client import request
from tests.integration.harness.processes import Process, free_port

from .memory import process_tree

START_TIMEOUT = 30.0

_CONFIG = """\
daemon off;
{user}
worker_processes auto;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;

events {{
    worker_connections 4096;
}}

http {{
    access_log {dir}/access.log;
    client_body_temp_path {dir}/tmp/body;
    proxy_temp_path {dir}/tmp/proxy;
    fastcgi_temp_path {dir}/tmp/fastcgi;
    uwsgi_temp_path {dir}/tmp/uwsgi;
    scgi_temp_path {dir}/tmp/scgi;
    default_type application/octet-stream;
    sendfile on;
    tcp_nopush on;
    keepalive_timeout 65;
    keepalive_requests 100000;

    proxy_cache_path {dir}/cache levels=1:2 keys_zone=registry:16m inactive=60d max_size=64g use_temp_path=off;

    upstream registry {{
        server 127.0.0.1:{upstream_port};
        keepalive 32;
    }}

    server {{
        listen 127.0.0.1:{port} backlog=1024;

        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_read_timeout 900;

        proxy_cache registry;
        # Concurrent misses of one key wait for the first fetch instead of
        # each going upstream.
        proxy_cache_lock on;
        proxy_cache_lock_timeout 880s;
        proxy_cache_methods GET HEAD;
        proxy_cache_revalidate on;
        proxy_force_ranges on;
        proxy_ignore_client_abort on;
        proxy_ignore_headers X-Accel-Expires Expires Cache-Control Set-Cookie;
        proxy_hide_header Set-Cookie;

        # Blobs by digest: one cache entry per digest, whatever the repository.
        location ~ ^/v2/(.*)/blobs/(sha256:.*) {{
            set $cache_key $2;
            proxy_cache_key $cache_key;
            proxy_cache_valid 200 206 60d;
            proxy_pass http://registry;
        }}

        # Manifests by digest never change.
        location ~ ^/v2/(.*)/manifests/sha256: {{
            proxy_cache_key $uri;
            proxy_cache_valid 200 60d;
            proxy_pass http://registry;
        }}

        # Manifests by tag: kept for the tag TTL.
        location ~ ^/v2/(.*)/manifests/ {{
            proxy_cache_key $uri;
            proxy_cache_valid 200 {tag_ttl}s;
            proxy_pass http://registry;
        }}

        location / {{
            proxy_cache off;
            proxy_pass http://registry;
        }}
    }}
}}
"""


def _answers(url: str) -> bool:
    try:
        return request(f"{url}/v2/", timeout=2).status == 200
    except OSError:
        return False


@define(eq=False)
class NginxCache:
    """A running nginx with an empty cache in front of the upstream."""

    process: Process
    port: int

    name = "nginx"

    @classmethod
    def start(cls, binary: str, upstream_url: str, directory: Path, tag_ttl: float) -> NginxCache:
        directory.mkdir(parents=True, exist_ok=True)
        for sub in ("cache", "tmp/body", "tmp/proxy", "tmp/fastcgi", "tmp/uwsgi", "tmp/scgi"):
            (directory / sub).mkdir(parents=True, exist_ok=True)
        port = free_port()
        upstream_port = int(upstream_url.rsplit(":", 1)[1])
        config = _CONFIG.format(
            dir=directory,
            # As root the workers would otherwise run as nobody, who cannot
            # write into our directories.
            user="user root;" if os.geteuid() == 0 else "",
            port=port,
            upstream_port=upstream_port,
            # nginx's cache validity has whole seconds.
            tag_ttl=max(1, math.ceil(tag_ttl)),
        )
        config_path = directory / "nginx.conf"
        config_path.write_text(config)
        process = Process.start(
            "nginx",
            [binary, "-p", str(directory), "-c", str(config_path), "-e", str(directory / "error.log")],
            directory / "nginx.log",
        )
        url = f"http://127.0.0.1:{port}"
        try:
            process.wait_until(lambda: _answers(url), START_TIMEOUT, "200 from GET /v2/")
        except BaseException:
            process.stop()
            raise
        return cls(process, port)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def pids(self) -> list[int]:
        """The master and its workers."""
        return process_tree(self.process.pid)

    def alive(self) -> bool:
        return self.process.running()

    def stop(self) -> None:
        # SIGTERM is nginx's fast shutdown; the workers go with the master.
        self.process.stop()
