"""A private dockerd whose only Docker Hub mirror is the mirror under test.

It owns dockerd's directories, its command line and environment, and the
``docker`` CLI calls the tests make against it. It shares nothing with a
system dockerd: own config file, data root, exec root and socket.

Without a ``--containerd`` flag and with no system containerd socket,
dockerd starts (and on exit stops) a containerd of its own under its exec
root; that managed containerd also dies with dockerd (it runs with a parent
death signal), so stopping dockerd leaves nothing behind.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

from attrs import define

from .processes import Process, child_env

START_TIMEOUT = 60.0
CLI_TIMEOUT = 180.0

# dockerd tries registry-1.docker.io after a mirror fails. Through this
# proxy (the discard port, where nothing listens) that fallback fails at
# once, locally, instead of reaching the internet, and the pull fails with
# it, as a user behind a firewall would see.
DEAD_END_PROXY = "http://127.0.0.1:9"


@define(eq=False)
class Dockerd:
    process: Process
    socket: Path
    work_dir: Path
    runtime_dir: Path
    config_dir: Path
    docker_binary: str

    @classmethod
    def start(
        cls,
        dockerd_binary: str,
        docker_binary: str,
        mirrors: Sequence[str],
        insecure_registries: Sequence[str],
        work_dir: Path,
    ) -> Dockerd:
        """Start dockerd with these Docker Hub mirrors and plain-HTTP
        registries, and wait until its API answers."""
        work_dir.mkdir(parents=True, exist_ok=True)
        # The socket and containerd's sockets live under the exec root, and
        # unix socket paths are limited to 108 bytes: keep them short.
        runtime_dir = Path(tempfile.mkdtemp(prefix="mpd-", dir="/tmp"))
        socket = runtime_dir / "docker.sock"
        config_file = work_dir / "daemon.json"
        config_file.write_text(
            json.dumps(
                {
                    "registry-mirrors": list(mirrors),
                    "insecure-registries": list(insecure_registries),
                    # Else dockerd 20.10 writes its identity to /etc/docker.
                    "deprecated-key-path": str(work_dir / "key.json"),
                }
            )
        )
        config_dir = work_dir / "cli"
        config_dir.mkdir(exist_ok=True)
        argv = [
            dockerd_binary,
            f"--config-file={config_file}",
            "--storage-driver=vfs",
            "--iptables=false",
            "--bridge=none",
            f"--data-root={work_dir / 'data'}",
            f"--exec-root={runtime_dir / 'exec'}",
            f"--host=unix://{socket}",
            f"--pidfile={runtime_dir / 'docker.pid'}",
        ]
        env = child_env(
            HTTPS_PROXY=DEAD_END_PROXY,
            HTTP_PROXY=DEAD_END_PROXY,
            NO_PROXY="127.0.0.1,localhost",
        )
        process = Process.start("dockerd", argv, work_dir / "dockerd.log", env=env)
        daemon = cls(process, socket, work_dir, runtime_dir, config_dir, docker_binary)
        try:
            process.wait_until(daemon._pings, START_TIMEOUT, "answer to 'docker version'")
        except BaseException:
            daemon.stop()
            raise
        return daemon

    def _pings(self) -> bool:
        if not self.socket.exists():
            return False
        return self.run("version", check=False, timeout=10).returncode == 0

    def run(
        self, *args: str, check: bool = True, timeout: float = CLI_TIMEOUT
    ) -> subprocess.CompletedProcess[str]:
        """``docker -H unix://SOCKET ARGS`` with a private CLI config."""
        argv = [self.docker_binary, "-H", f"unix://{self.socket}", *args]
        env = child_env(DOCKER_CONFIG=str(self.config_dir))
        done = subprocess.run(
            argv, capture_output=True, text=True, env=env, timeout=timeout, check=False
        )
        if check and done.returncode != 0:
            raise RuntimeError(
                f"{' '.join(argv)} exited {done.returncode}:\n{done.stderr}{done.stdout}\n"
                f"dockerd log tail:\n{self.process.tail(30)}"
            )
        return done

    def pull(self, reference: str) -> None:
        self.run("pull", "--quiet", reference)

    def repo_digests(self, reference: str) -> list[str]:
        """``docker image inspect``'s RepoDigests for ``reference``."""
        out = self.run("image", "inspect", "--format", "{{json .RepoDigests}}", reference)
        digests = json.loads(out.stdout)
        assert isinstance(digests, list)
        return [str(d) for d in digests]

    def stop(self) -> None:
        self.process.stop(timeout=30)
        # A clean exit unmounts everything; a killed dockerd leaves its
        # data root bind-mounted, which would pin the test's temp dir.
        for mount_point in _mounts_under(self.work_dir, self.runtime_dir):
            subprocess.run(["umount", "--lazy", mount_point], check=False, timeout=30)
        shutil.rmtree(self.runtime_dir, ignore_errors=True)


def _mounts_under(*roots: Path) -> list[str]:
    """Mount points below ``roots``, deepest first (from /proc/mounts)."""
    prefixes = [str(root) + "/" for root in roots]
    with open("/proc/mounts") as mounts:
        points = [line.split()[1] for line in mounts]
    return sorted((p for p in points if any(p.startswith(r) for r in prefixes)), reverse=True)
