"""The cluster options: what they make, and the one-line errors for what
cannot work."""

from __future__ import annotations

import pytest
from twisted.scripts.twistd import ServerOptions

from mirrorproxy.common.errors import ConfigError
from mirrorproxy.server.clustersettings import ClusterSettings, cluster_settings_from
from mirrorproxy.server.tap import Options
from mirrorproxy.storage.s3.location import S3Location

NODE = {
    "storage": "s3://mirror-cache/eu",
    "s3-endpoint": "http://10.0.0.9:8333/",
    "s3-region": "eu-1",
    "redis": "redis://10.0.0.8:6379/2",
    "advertise": "http://10.0.0.5:5000",
}


def test_no_storage_is_a_mirror_on_its_own():
    assert cluster_settings_from({}) == ClusterSettings()
    assert not ClusterSettings().shared


def test_a_node_of_a_cluster():
    settings = cluster_settings_from({**NODE, "blob-redirect": "presigned"})

    assert settings.storage == S3Location("mirror-cache", "eu/")
    assert (settings.endpoint.url, settings.endpoint.region) == ("http://10.0.0.9:8333", "eu-1")
    assert (settings.redis.host, settings.redis.port, settings.redis.db) == ("10.0.0.8", 6379, 2)
    assert (settings.advertise, settings.blob_redirect, settings.shared) == ("http://10.0.0.5:5000", "presigned", True)


def test_the_config_files_keys():
    settings = cluster_settings_from(
        {**NODE, "s3-credentials": {"access-key-id": "AKIA1", "secret-access-key": "s3cr3t"}}
    )

    assert (settings.keys.access_key_id, settings.keys.secret_access_key) == ("AKIA1", "s3cr3t")
    assert "s3cr3t" not in repr(settings)


@pytest.mark.parametrize(
    "values, message",
    [
        ({"storage": "/var/cache/mirror"}, "storage: '/var/cache/mirror' is not an S3 location"),
        ({"storage": "s3://Bad_Bucket/x"}, "is not a bucket name"),
        ({"redis": "redis://r:6379"}, "redis needs --storage s3://BUCKET/PREFIX"),
        ({"blob-redirect": "presigned"}, "blob-redirect needs --storage"),
        ({**NODE, "advertise": None}, "redis needs --advertise URL"),
        ({**NODE, "advertise": "10.0.0.5:5000"}, "advertise must be an http(s) URL"),
        ({**NODE, "s3-endpoint": "ftp://x"}, "s3-endpoint must be an http(s) URL"),
        ({**NODE, "redis": "http://r"}, "the scheme must be redis:// or rediss://"),
        ({**NODE, "blob-redirect": "sometimes"}, "blob-redirect must be off, presigned or a CDN's base URL"),
        ({**NODE, "s3-credentials": {"access-key-id": "AKIA1"}}, "[s3-credentials] needs both"),
    ],
)
def test_what_cannot_work_is_one_line_naming_the_option(values, message):
    with pytest.raises(ConfigError) as raised:
        cluster_settings_from(values)

    assert message in str(raised.value)
    assert "\n" not in str(raised.value)


def twistd_exit(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exited:
        ServerOptions().parseOptions(["-n", "--pidfile=", "mirrorproxy", *argv])
    out, err = capsys.readouterr()
    return exited.value.code, out, err


def test_a_redis_password_on_the_command_line_is_refused(capsys):
    assert twistd_exit(
        capsys, "--storage", "s3://b-1/p", "--advertise", "http://n:5000", "--redis", "redis://:pw@r:6379"
    ) == (2, "", "mirrorproxy: redis: a password goes in the config file, not on the command line (where ps shows it)\n")


@pytest.mark.parametrize(
    "secret",
    [
        '[s3-credentials]\naccess-key-id = "AKIA1"\nsecret-access-key = "s3cr3t"\n',
        'redis = "redis://:pw@r:6379"\n',
    ],
)
def test_a_config_file_with_a_secret_readable_by_everyone_is_refused(capsys, tmp_path, secret):
    config = tmp_path / "node.toml"
    config.write_text('storage = "s3://b-1/p"\nadvertise = "http://n:5000"\n' + secret)
    config.chmod(0o644)

    status, _, err = twistd_exit(capsys, "--config", str(config))

    assert (status, err) == (2, f"mirrorproxy: config file {config} holds credentials and is readable by everyone; chmod o-r {config}\n")


def test_the_options_reach_the_settings(tmp_path):
    config = tmp_path / "node.toml"
    config.write_text('[s3-credentials]\naccess-key-id = "AKIA1"\nsecret-access-key = "s3cr3t"\n')
    config.chmod(0o600)
    options = Options()
    options.parseOptions(
        ["--config", str(config), "--storage", "s3://b-1/p", "--s3-endpoint", "http://s3:8333",
         "--redis", "redis://r:6379/1", "--advertise", "http://n:5000", "--blob-redirect", "https://cdn.example/m"]
    )

    cluster = options["settings"].cluster
    assert (str(cluster.storage), cluster.endpoint.url, cluster.redis.db, cluster.blob_redirect) == (
        "s3://b-1/p/", "http://s3:8333", 1, "https://cdn.example/m")
    assert cluster.keys.access_key_id == "AKIA1"
