"""A private containerd, and ``ctr images pull`` through a hosts directory.

It owns containerd's root, state and socket (nothing shared with a system
containerd; the CRI plugin is off) and the ``hosts.toml`` files that send a
registry's pulls to a mirror, with the mirror's CA and static headers, as an
operator writes them under /etc/containerd/certs.d.  ``ctr`` resolves and
fetches in its own process and stores into the daemon; the HTTP requests a
mirror sees are ctr's, made by containerd's resolver library, the same code
the CRI plugin uses.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path

from attrs import define

from .processes import Process, child_env

START_TIMEOUT = 30.0
PULL_TIMEOUT = 180.0
# Where a pull goes when the mirror fails: the discard port, where nothing
# listens, so a fallback fails at once instead of reaching the real registry.
DEAD_END = "http://127.0.0.1:9"


@define(eq=False)
class Containerd:
    process: Process
    ctr: str
    socket: Path
    runtime_dir: Path
    work_dir: Path

    @classmethod
    def start(cls, containerd_binary: str, ctr_binary: str, work_dir: Path) -> Containerd:
        work_dir.mkdir(parents=True, exist_ok=True)
        # Unix socket paths are limited to 108 bytes: keep them short.
        runtime_dir = Path(tempfile.mkdtemp(prefix="mpc-", dir="/tmp"))
        socket = runtime_dir / "containerd.sock"
        config = work_dir / "containerd.toml"
        config.write_text(
            "version = 2\n"
            f'root = "{work_dir / "root"}"\n'
            f'state = "{runtime_dir / "state"}"\n'
            'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
            "[grpc]\n"
            f'  address = "{socket}"\n'
        )
        process = Process.start(
            "containerd", [containerd_binary, "--config", str(config)], work_dir / "containerd.log"
        )
        daemon = cls(process, ctr_binary, socket, runtime_dir, work_dir)
        try:
            process.wait_until(daemon._answers, START_TIMEOUT, "an answer to 'ctr version'")
        except BaseException:
            daemon.stop()
            raise
        return daemon

    def _answers(self) -> bool:
        return self.socket.exists() and self.run("version", check=False).returncode == 0

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        argv = [self.ctr, "--address", str(self.socket), "--namespace", "mirrorproxy-tests", *args]
        done = subprocess.run(
            argv, capture_output=True, text=True, env=child_env(), timeout=PULL_TIMEOUT, check=False
        )
        if check and done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} exited {done.returncode}:\n{done.stderr}{done.stdout}")
        return done

    def write_hosts(
        self,
        registry: str,
        mirror_url: str,
        ca: Path | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Path:
        """A hosts directory in which ``registry``'s pulls go to ``mirror_url``
        first and, failing that, to a dead end."""
        hosts_dir = self.work_dir / "certs.d"
        directory = hosts_dir / registry
        directory.mkdir(parents=True, exist_ok=True)
        lines = [f'server = "{DEAD_END}"', "", f'[host."{mirror_url}"]']
        lines.append('  capabilities = ["pull", "resolve"]')
        if ca is not None:
            lines.append(f'  ca = "{ca}"')
        if headers:
            lines.append(f'  [host."{mirror_url}".header]')
            lines += [f'    {name} = "{value}"' for name, value in headers.items()]
        (directory / "hosts.toml").write_text("\n".join(lines) + "\n")
        return hosts_dir

    def pull(self, reference: str, hosts_dir: Path, *options: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.run("images", "pull", "--hosts-dir", str(hosts_dir), *options, reference, check=check)

    def image_digest(self, reference: str) -> str:
        """The digest ``ctr images ls`` shows for ``reference``."""
        out = self.run("images", "ls", f"name=={reference}").stdout.splitlines()
        assert len(out) == 2, out
        header, row = out[0].split(), out[1].split()
        # REF TYPE DIGEST SIZE ...: the digest is the first sha256: column.
        assert header[:3] == ["REF", "TYPE", "DIGEST"], header
        return next(field for field in row if field.startswith("sha256:"))

    def stop(self) -> None:
        self.process.stop(timeout=30)
        shutil.rmtree(self.runtime_dir, ignore_errors=True)
