"""``--config FILE``: the admin command reads the service's own config file."""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from mirrorproxy.admin.serviceconfig import EndpointUnusable, endpoint_url
from mirrorproxy.server.configfile import TOP_LEVEL

from .cachebuilder import CacheBuilder
from .clirunner import invoke, invoke_json
from .mirroranswers import Registry, exposition
from .staticserver import Answer, serve

UNIT = Path(__file__).parents[2] / "contrib" / "systemd" / "mirrorproxy.service"


def test_the_systemd_units_comments_spell_settings_as_the_config_file_does() -> None:
    comments = "\n".join(line for line in UNIT.read_text().splitlines() if line.startswith("#"))

    named = set(re.findall(r"(?<![\w-])([a-z][a-z_-]*) = ", comments))

    assert named and named <= set(TOP_LEVEL)
    for key in TOP_LEVEL:
        assert key.replace("-", "_") not in comments.replace(key, "")


@pytest.mark.parametrize(
    ("endpoint", "url"),
    [
        ("tcp:9100:interface=127.0.0.1", "http://127.0.0.1:9100"),
        ("tcp:9100", "http://127.0.0.1:9100"),
        ("tcp:port=9100:interface=0.0.0.0", "http://127.0.0.1:9100"),
        ("tcp:5000:192.0.2.7", "http://192.0.2.7:5000"),
        (r"tcp:9100:interface=\:\:", "http://[::1]:9100"),
        (r"tcp6:9100:interface=\:\:1", "http://[::1]:9100"),
        ("tcp6:9100", "http://[::1]:9100"),
        ("ssl:443:privateKey=key.pem:certKey=cert.pem", "https://127.0.0.1:443"),
        ("ssl:port=8443:interface=192.0.2.7:privateKey=/run/credentials/m/tls-key", "https://192.0.2.7:8443"),
    ],
)
def test_the_url_of_an_endpoint_string(endpoint: str, url: str) -> None:
    assert endpoint_url(endpoint) == url


@pytest.mark.parametrize(
    ("endpoint", "why"),
    [
        ("unix:/run/mirrorproxy.sock", "is a unix socket"),
        ("systemd:domain=INET:index=0", "not a tcp:, tcp6: or ssl: endpoint"),
        ("tcp:0", "cannot tell the port"),
        ("tcp:http", "cannot tell the port"),
    ],
)
def test_endpoints_no_url_reaches(endpoint: str, why: str) -> None:
    with pytest.raises(EndpointUnusable, match=why):
        endpoint_url(endpoint)


@pytest.fixture
def cache(tmp_path: Path) -> CacheBuilder:
    return CacheBuilder(str(tmp_path / "cache"))


def config_file(tmp_path: Path, text: str, mode: int = 0o600) -> str:
    path = tmp_path / "mirrorproxy.toml"
    path.write_text(text)
    path.chmod(mode)
    return str(path)


def port_of(url: str) -> int:
    port = urlsplit(url).port
    assert port is not None
    return port


def test_the_cache_directory_comes_from_the_config_file(cache: CacheBuilder, tmp_path: Path) -> None:
    image = cache.image("org/app", "1", os.urandom(10))
    config = config_file(tmp_path, f'cache-dir = "{cache.root}"\n')

    for command in (["ls"], ["stats", "--no-metrics"], ["verify"], ["gc", "--dry-run"]):
        result = invoke(*command, "--config", config)
        assert result.exit_code == 0, (command, result.output)
    assert str(image.digest) in invoke("ls", "--config", config).stdout
    assert invoke("purge", "org/app:1", "--config", config).exit_code == 0
    assert not os.path.exists(cache.tag_path("org/app", "1"))


def test_a_cache_dir_on_the_command_line_wins_over_the_file(cache: CacheBuilder, tmp_path: Path) -> None:
    cache.image("org/app", "1", os.urandom(10))
    config = config_file(tmp_path, f'cache-dir = "{tmp_path / "elsewhere"}"\n')

    result = invoke("ls", "--config", config, "--cache-dir", cache.root)

    assert result.exit_code == 0, result.output
    assert "org/app" in result.stdout


def test_a_missing_cache_directory_named_by_the_file_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = config_file(tmp_path, 'cache-dir = "cache"\n')

    result = invoke("gc", "--config", config)

    assert result.exit_code == 2
    assert result.stderr == (
        f"Error: no cache directory 'cache' (the cache-dir of {config}; a relative path is taken from "
        "the directory this command runs in, as the service takes it from its own)\n"
    )


def test_the_registries_come_from_the_config_file(cache: CacheBuilder, tmp_path: Path) -> None:
    cache.image("library/alpine", "1", os.urandom(10))
    local = CacheBuilder(cache.root, registry="registry.local_5000")
    local.image("team/app", "1", os.urandom(10))
    config = config_file(tmp_path, f'cache-dir = "{cache.root}"\nupstream = "http://registry.local:5000"\n')

    served = invoke("ls", "--config", config)
    picked = invoke("ls", "--config", config, "--registry", "docker.io")

    assert "team/app" in served.stdout and "library/alpine" not in served.stdout
    assert "library/alpine" in picked.stdout and "team/app" not in picked.stdout


def test_stats_reads_the_metrics_where_the_file_says_the_service_serves_them(
    cache: CacheBuilder, tmp_path: Path
) -> None:
    text = exposition(blob_hit=3, blob_miss=1)
    with serve({"/metrics": Answer(200, {}, text)}) as server:
        config = config_file(
            tmp_path,
            f'cache-dir = "{cache.root}"\nmetrics-listen = ["unix:/run/m.sock", "tcp:{port_of(server.url)}"]\n',
        )
        result = invoke("stats", "--config", config)

    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[-1].startswith("hit ratio since the service started: 75.0% (HIT 3,")
    assert [s.path for s in server.seen] == ["/metrics"]


@pytest.mark.parametrize(
    ("setting", "why"),
    [
        ("", "the service has no metrics-listen in {config}"),
        (
            'metrics-listen = ["unix:/run/m.sock"]\n',
            "no metrics-listen endpoint in {config} can be reached: 'unix:/run/m.sock' is a unix socket; "
            "the admin command speaks HTTP over TCP",
        ),
    ],
)
def test_stats_says_why_the_file_gives_no_metrics_url(
    cache: CacheBuilder, tmp_path: Path, setting: str, why: str
) -> None:
    config = config_file(tmp_path, f'cache-dir = "{cache.root}"\n{setting}')

    result = invoke("stats", "--config", config)
    document = invoke_json("stats", "--config", config)

    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[-1] == f"hit ratio: unknown, {why.format(config=config)}"
    assert document["metrics"] == {"url": None, "error": why.format(config=config)}


def test_prefetch_pulls_through_the_mirror_where_the_file_says_it_listens(tmp_path: Path) -> None:
    with serve({"/v2/": Answer(200, {}, b"{}")}) as mirror:
        Registry(mirror).image(100, tag="1")
        port = port_of(mirror.url)
        config = config_file(tmp_path, f'listen = ["unix:/run/m.sock", "tcp:{port}:interface=127.0.0.1"]\n')

        result = invoke("prefetch", "org/app:1", "--config", config)

    assert result.exit_code == 0, result.output
    assert "pulled org/app:1: 2 blobs" in result.stdout


def test_prefetch_with_a_mirror_only_on_a_unix_socket_says_to_give_its_url(tmp_path: Path) -> None:
    config = config_file(tmp_path, 'listen = ["unix:/run/m.sock"]\n')

    result = invoke("prefetch", "alpine", "--config", config)

    assert result.exit_code == 2
    assert result.stderr == (
        f"Error: no listen endpoint in {config} can be reached: 'unix:/run/m.sock' is a unix socket; "
        "the admin command speaks HTTP over TCP; give --mirror URL\n"
    )


@pytest.mark.parametrize(
    ("text", "mode", "why"),
    [
        ('cache_dir = "/var/cache/mirrorproxy"\n', 0o600, "{config}: unknown setting 'cache_dir'"),
        ("cache-dir = \n", 0o600, "config file {config} is not valid TOML"),
        (
            '[upstream-credentials]\nusername = "u"\npassword = "p"\n',
            0o644,
            "config file {config} holds credentials and is readable by everyone; chmod o-r {config}",
        ),
        ('[upstream-credentials]\nusername = "u"\n', 0o600, "{config}: [upstream-credentials] needs both"),
    ],
)
def test_a_config_file_the_service_would_refuse_is_one_line_and_exit_2(
    tmp_path: Path, text: str, mode: int, why: str
) -> None:
    config = config_file(tmp_path, text, mode)

    for command in (["ls"], ["prefetch", "alpine"]):
        result = invoke(*command, "--config", config)
        assert result.exit_code == 2
        assert result.stderr.startswith("Error: " + why.format(config=config))
        assert len(result.stderr.splitlines()) == 1


def test_a_missing_config_file_is_one_line_and_exit_2(tmp_path: Path) -> None:
    result = invoke("stats", "--config", str(tmp_path / "nothing.toml"))

    assert result.exit_code == 2
    assert result.stderr == f"Error: cannot read config file {tmp_path / 'nothing.toml'}: No such file or directory\n"
