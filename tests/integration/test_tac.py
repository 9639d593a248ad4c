"""mirror.tac builds the same service as the plugin, from the config file
that MIRRORPROXY_CONFIG names."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from .harness.fetching import Received, fetch
from .harness.mirror import Mirror, twistd
from .harness.oci import MiB
from .harness.processes import Process, child_env, free_port
from .harness.publish import Publisher
from .harness.registry import UpstreamRegistry

pytestmark = pytest.mark.integration

TAC = Path(__file__).resolve().parents[2] / "mirror.tac"


def test_mirror_tac_serves_with_the_named_config(
    publisher: Publisher,
    upstream: UpstreamRegistry,
    unique: Callable[[str], str],
    tmp_path: Path,
) -> None:
    blob = publisher.blob(f"org/{unique('tac')}", 1 * MiB)
    port = free_port()
    config = tmp_path / "mirrorproxy.toml"
    config.write_text(
        f'listen = ["tcp:{port}:interface=127.0.0.1"]\n'
        f'upstream = "{upstream.url}"\n'
        f'cache-dir = "{tmp_path / "cache"}"\n'
    )
    env = child_env(MIRRORPROXY_CONFIG=str(config))
    process = Process.start(
        "mirror.tac", [twistd(), "-ny", str(TAC), "--pidfile="], tmp_path / "tac.log", env=env, cwd=tmp_path
    )
    mirror = Mirror(process, port, tmp_path / "cache")
    try:
        process.wait_until(mirror._answers, 30, "an answer on /v2/")
        assert fetch(mirror, blob.path) == Received(200, len(blob.data), blob.digest)
        assert os.path.isdir(tmp_path / "cache" / "spool")
    finally:
        mirror.stop()


def test_a_bad_config_is_one_line_on_stderr_and_status_2(tmp_path: Path) -> None:
    config = tmp_path / "mirrorproxy.toml"
    config.write_text('listen = ["tcp:5000", "garbage"]\ndrain-timeout = 5\n')

    done = subprocess.run(
        [twistd(), "-ny", str(TAC), "--pidfile="],
        capture_output=True,
        text=True,
        timeout=30,
        env=child_env(MIRRORPROXY_CONFIG=str(config)),
        cwd=tmp_path,
        check=False,
    )

    assert (done.returncode, done.stdout, done.stderr) == (
        2,
        "",
        "mirrorproxy: listen: bad endpoint 'garbage': Unknown endpoint type: 'garbage'\n",
    )
