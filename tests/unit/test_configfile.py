"""The TOML config file: every setting, clear errors, secrets kept close."""

from __future__ import annotations

import os
import re

import pytest

from mirrorproxy.common.errors import ConfigError
from mirrorproxy.server.configfile import read_config, settings_from


def write(tmp_path, text: str, mode: int = 0o600) -> str:
    path = tmp_path / "mirrorproxy.toml"
    path.write_text(text)
    os.chmod(path, mode)
    return str(path)


FULL = """
listen = ["tcp:5000", "tcp6:5001"]
upstream = "http://registry.example:5000"
cache-dir = "/var/cache/mirrorproxy"
tag-ttl = 60
max-cache-size = "50G"
metrics-listen = ["tcp:9100:interface=127.0.0.1"]
upstream-proxy = "http://proxy.example:3128"
upstream-ca = "/etc/ssl/corp.pem"
upstream-insecure = false
htpasswd = "/etc/mirrorproxy/htpasswd"
allow = ["10.0.0.0/8"]
upstream-redirect-allow = ["172.16.0.0/12", "fd00::/8"]
drain-timeout = 5
max-connections = 500

[upstream-credentials]
username = "alice"
password = "s3cret"

[timeouts]
connect = 3
headers = 4
body-silence = 5
"""


def test_every_setting_reaches_the_settings(tmp_path):
    settings = settings_from(read_config(write(tmp_path, FULL)), {})

    assert settings.listen == ("tcp:5000", "tcp6:5001")
    assert settings.upstream.url == "http://registry.example:5000"
    assert settings.cache_dir == "/var/cache/mirrorproxy"
    assert settings.tag_ttl == 60
    assert settings.max_cache_size == 50 << 30
    assert settings.metrics_listen == ("tcp:9100:interface=127.0.0.1",)
    assert settings.upstream_proxy == "http://proxy.example:3128"
    assert settings.upstream_ca == "/etc/ssl/corp.pem"
    assert settings.htpasswd == "/etc/mirrorproxy/htpasswd"
    assert settings.allow == ("10.0.0.0/8",)
    assert settings.upstream_redirect_allow == ("172.16.0.0/12", "fd00::/8")
    assert settings.drain_timeout == 5
    assert settings.max_connections == 500
    assert (settings.credentials.username, settings.credentials.password) == ("alice", "s3cret")
    assert (settings.timeouts.connect, settings.timeouts.headers, settings.timeouts.body_silence) == (3, 4, 5)


def test_the_password_never_shows_in_a_repr(tmp_path):
    settings = settings_from(read_config(write(tmp_path, FULL)), {})
    assert "s3cret" not in repr(settings)


def test_environment_credentials_win_over_the_files(tmp_path):
    environ = {"MIRRORPROXY_UPSTREAM_USERNAME": "bob", "MIRRORPROXY_UPSTREAM_PASSWORD": "pw"}
    settings = settings_from(read_config(write(tmp_path, FULL)), environ)
    assert settings.credentials.username == "bob"


def test_defaults_without_a_file():
    settings = settings_from({}, {})
    assert settings.listen == ("tcp:5000",)
    assert settings.upstream.namespace == "docker.io"
    assert settings.max_cache_size is None and settings.metrics_listen == ()


@pytest.mark.parametrize(
    "text, message",
    [
        ('lisen = ["tcp:5000"]', "unknown setting 'lisen'"),
        ("tag-ttl = \"soon\"", "tag-ttl must be a number of seconds"),
        ("[timeouts]\nconect = 3", "unknown setting 'timeouts.conect'"),
        ("listen = \"tcp:5000\"", "listen must be a list of endpoint strings"),
        ("upstream-insecure = \"yes\"", "upstream-insecure must be true or false"),
        ("this is not toml", "not valid TOML"),
    ],
)
def test_mistakes_are_named(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message):
        read_config(write(tmp_path, text))


def test_a_world_readable_file_with_credentials_is_refused(tmp_path):
    path = write(tmp_path, '[upstream-credentials]\nusername = "a"\npassword = "b"\n', mode=0o644)
    with pytest.raises(ConfigError, match="readable by everyone"):
        read_config(path)


def test_a_world_readable_file_with_a_proxy_password_is_refused(tmp_path):
    path = write(tmp_path, 'upstream-proxy = "http://u:p@proxy:3128"\n', mode=0o644)
    with pytest.raises(ConfigError, match="readable by everyone"):
        read_config(path)


def test_a_world_readable_file_without_secrets_is_fine(tmp_path):
    assert read_config(write(tmp_path, "tag-ttl = 10\n", mode=0o644)) == {"tag-ttl": 10}


def test_a_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config file"):
        read_config(str(tmp_path / "nope.toml"))


def test_a_bad_size(tmp_path):
    with pytest.raises(ConfigError, match="max-cache-size"):
        settings_from(read_config(write(tmp_path, 'max-cache-size = "lots"\n')), {})


@pytest.mark.parametrize("size", ['"512K"', '"1000000"', "1048575"])
def test_a_cache_size_under_a_mebibyte_is_refused(tmp_path, size):
    """Probably a missing unit: a cache that evicts every blob it fills."""
    with pytest.raises(ConfigError, match="max-cache-size .* is below 1 MiB"):
        settings_from(read_config(write(tmp_path, f"max-cache-size = {size}\n")), {})


@pytest.mark.parametrize(
    "option, value, message",
    [
        ("--drain-timeout", "x", "drain-timeout must be a number of seconds, not 'x'"),
        ("--tag-ttl", "-1", "tag-ttl must be a number of seconds, not -1"),
        ("--max-connections", "0", "max-connections must be a positive whole number, not 0"),
        ("--max-connections", "many", "max-connections must be a positive whole number, not 'many'"),
    ],
)
def test_bad_numbers_name_their_option(option, value, message):
    from twisted.python import usage

    from mirrorproxy.server.tap import Options

    with pytest.raises(usage.UsageError, match=message):
        Options().parseOptions([option, value])


def test_a_bad_redirect_network_is_a_usage_error_naming_the_option():
    from twisted.python import usage

    from mirrorproxy.server.tap import Options

    with pytest.raises(usage.UsageError, match="--upstream-redirect-allow '10.0.0.1/8'"):
        Options().parseOptions(["--upstream-redirect-allow", "10.0.0.1/8"])


def test_the_command_line_wins_over_the_file(tmp_path):
    from mirrorproxy.server.tap import Options

    path = write(tmp_path, 'tag-ttl = 60\ncache-dir = "/srv/cache"\nlisten = ["tcp:1"]\n')
    options = Options()
    options.parseOptions(["--config", path, "--tag-ttl", "5", "--listen", "tcp:2", "--listen", "tcp:3"])

    settings = options["settings"]
    assert (settings.tag_ttl, settings.cache_dir, settings.listen) == (5, "/srv/cache", ("tcp:2", "tcp:3"))


def test_a_bad_config_file_is_a_usage_error_naming_the_key(tmp_path):
    from twisted.python import usage

    from mirrorproxy.server.tap import Options

    path = write(tmp_path, "colour = 'blue'\n")
    with pytest.raises(usage.UsageError, match="unknown setting 'colour'"):
        Options().parseOptions(["--config", path])


# -- several registries ---------------------------------------------------------------


REGISTRIES = """
upstream = ["docker.io=https://artifactory.example/api/docker/hub-remote/"]
tag-ttl = 60
upstream-proxy = "http://proxy.example:3128"
host = ["ghcr.mirror.example=ghcr.io"]

[registries."ghcr.io"]
url = "https://ghcr.io"
tag-ttl = 600

[registries."ghcr.io".credentials]
username = "bot"
password = "ghp-secret"

[registries."registry.k8s.io"]
url = "https://registry.k8s.io"
upstream-proxy = "http://other-proxy.example:3128"
"""


def test_registries_come_from_upstream_entries_and_tables(tmp_path):
    settings = settings_from(read_config(write(tmp_path, REGISTRIES)), {})

    hub, ghcr, k8s = settings.served()
    assert (hub.namespace, hub.upstream.url) == ("docker.io", "https://artifactory.example/api/docker/hub-remote")
    assert (ghcr.namespace, ghcr.upstream.url, ghcr.tag_ttl) == ("ghcr.io", "https://ghcr.io", 600)
    assert (ghcr.credentials.username, ghcr.credentials.password) == ("bot", "ghp-secret")
    assert (k8s.tag_ttl, k8s.upstream_proxy) == (60, "http://other-proxy.example:3128")
    assert (hub.tag_ttl, hub.upstream_proxy, hub.credentials) == (60, "http://proxy.example:3128", None)
    assert settings.default_registry() == hub
    assert settings.hosts == (("ghcr.mirror.example", "ghcr.io"),)
    assert "ghp-secret" not in repr(settings)


def test_a_file_with_registry_credentials_must_not_be_world_readable(tmp_path):
    with pytest.raises(ConfigError, match="readable by everyone"):
        read_config(write(tmp_path, REGISTRIES, mode=0o644))


def test_environment_credentials_go_to_the_default_registry(tmp_path):
    environ = {"MIRRORPROXY_UPSTREAM_USERNAME": "hub-user", "MIRRORPROXY_UPSTREAM_PASSWORD": "pw"}
    settings = settings_from(read_config(write(tmp_path, REGISTRIES)), environ)

    hub, ghcr, _ = settings.served()
    assert (hub.credentials.username, ghcr.credentials.username) == ("hub-user", "bot")


def test_repeated_upstream_options_name_the_registries():
    from mirrorproxy.server.tap import Options

    options = Options()
    options.parseOptions(
        ["--upstream", "ghcr.io=https://ghcr.io", "--upstream", "http://127.0.0.1:5001", "--host", "x.example=ghcr.io"]
    )

    served = options["settings"].served()
    assert [r.namespace for r in served] == ["ghcr.io", "127.0.0.1:5001"]
    assert options["settings"].default_registry() is None  # several, none docker.io
    assert options["settings"].hosts == (("x.example", "ghcr.io"),)


def test_one_bare_upstream_is_as_before():
    from mirrorproxy.server.tap import Options

    options = Options()
    options.parseOptions(["--upstream", "http://127.0.0.1:5001"])

    (only,) = options["settings"].served()
    assert (only.namespace, only.upstream.url) == ("127.0.0.1:5001", "http://127.0.0.1:5001")
    assert options["settings"].default_registry() == only


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--upstream", "ghcr.io=https://ghcr.io", "--upstream", "ghcr.io=https://other"], "given twice"),
        (["--upstream", "not a host=https://ghcr.io"], "is not a registry name"),
        (["--upstream", "ghcr.io=ftp://ghcr.io"], "http:// or https://"),
        (["--host", "x.example=quay.io"], "quay.io is not one the mirror serves"),
        (["--host", "x.example"], "not NAME=REGISTRY"),
    ],
)
def test_bad_registries_are_usage_errors(argv, message):
    from twisted.python import usage

    from mirrorproxy.server.tap import Options

    with pytest.raises(usage.UsageError, match=message):
        Options().parseOptions(argv)


@pytest.mark.parametrize(
    "text, message",
    [
        ('[registries."ghcr.io"]\nurll = "https://ghcr.io"\n', "unknown setting registries.'ghcr.io'.urll"),
        ('[registries."ghcr.io"]\ntag-ttl = 5\n', "needs a url"),
        ('[registries."-bad-"]\nurl = "https://x"\n', "is not a registry name"),
        ('[registries."ghcr.io"]\nurl = "https://ghcr.io"\n[registries."ghcr.io".credentials]\nusername = "a"\n', "needs both username and password"),
    ],
)
def test_bad_registry_tables_are_named(tmp_path, text, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        settings_from(read_config(write(tmp_path, text)), {})
