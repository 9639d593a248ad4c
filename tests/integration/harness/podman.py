"""Running podman in isolation, as root, for ``podman pull`` only.

Its own storage (``vfs``, under the test's directory: no overlay mounts to
clean up), run root, temporary and network config directories, signature
policy, auth file, ``containers.conf`` and ``registries.conf``, so that
nothing in the machine's /etc/containers or /var/lib/containers changes what
a test does or is changed by it.  The registries.conf is the test's: it is
where an operator points podman (and CRI-O, which reads the same file) at a
mirror, so writing it is part of what is tested.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from pathlib import Path

from attrs import define

from .processes import child_env

TIMEOUT = 180.0


@define
class Podman:
    binary: str
    home: Path
    run_root: Path

    @classmethod
    def prepare(cls, binary: str, home: Path) -> Podman:
        home.mkdir(parents=True, exist_ok=True)
        for directory in ("root", "tmp", "net"):
            (home / directory).mkdir(exist_ok=True)
        # podman refuses a run root path longer than 50 characters.
        run_root = Path(tempfile.mkdtemp(prefix="mpp-", dir="/tmp"))
        (home / "policy.json").write_text(
            json.dumps({"default": [{"type": "insecureAcceptAnything"}]})
        )
        (home / "auth.json").write_text("{}")
        (home / "containers.conf").write_text("")
        (home / "storage.conf").write_text(
            "[storage]\n"
            'driver = "vfs"\n'
            f'graphroot = "{home / "root"}"\n'
            f'runroot = "{run_root}"\n'
        )
        (home / "registries.conf").write_text("")
        return cls(binary, home, run_root)

    def remove(self) -> None:
        shutil.rmtree(self.run_root, ignore_errors=True)

    @property
    def registries_conf(self) -> Path:
        return self.home / "registries.conf"

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """``podman GLOBAL-OPTIONS ARGS``; with ``check``, an error carrying
        its stderr unless it succeeds."""
        env = child_env(
            HOME=str(self.home),
            TMPDIR=str(self.home / "tmp"),
            REGISTRY_AUTH_FILE=str(self.home / "auth.json"),
            CONTAINERS_CONF=str(self.home / "containers.conf"),
            CONTAINERS_STORAGE_CONF=str(self.home / "storage.conf"),
            CONTAINERS_REGISTRIES_CONF=str(self.registries_conf),
        )
        argv = [
            self.binary,
            "--root", str(self.home / "root"),
            "--runroot", str(self.run_root),
            "--storage-driver", "vfs",
            "--tmpdir", str(self.home / "tmp"),
            "--network-config-dir", str(self.home / "net"),
            "--cgroup-manager", "cgroupfs",
            "--events-backend", "file",
            *args,
        ]
        done = subprocess.run(
            argv, capture_output=True, text=True, env=env, timeout=TIMEOUT, check=False
        )
        if check and done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} exited {done.returncode}:\n{done.stderr}{done.stdout}")
        return done

    def pull(self, reference: str, *options: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """``podman pull OPTIONS REFERENCE`` as registries.conf says (which
        mirror, whether plain HTTP is allowed)."""
        return self.run(
            "pull",
            "--quiet",
            "--signature-policy", str(self.home / "policy.json"),
            *options,
            reference,
            check=check,
        )

    def image_digest(self, reference: str) -> str:
        """The manifest digest podman records for ``reference``."""
        return self.run("image", "inspect", "--format", "{{.Digest}}", reference).stdout.strip()
