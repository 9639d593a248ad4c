"""Running skopeo in isolation: our own signature policy, an empty auth file
and an empty registries.conf, so that nothing in the machine's
/etc/containers or ~/.docker changes what a test does."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from attrs import define

from .oci import Image
from .processes import child_env

TIMEOUT = 180


@define
class Skopeo:
    binary: str
    home: Path

    @classmethod
    def prepare(cls, binary: str, home: Path) -> Skopeo:
        home.mkdir(parents=True, exist_ok=True)
        (home / "policy.json").write_text(
            json.dumps({"default": [{"type": "insecureAcceptAnything"}]})
        )
        (home / "auth.json").write_text("{}")
        (home / "registries.conf").write_text("")
        (home / "tmp").mkdir(exist_ok=True)
        return cls(binary, home)

    def run(self, *args: str, timeout: float = TIMEOUT) -> str:
        """``skopeo ARGS``; its stdout, or an error carrying its stderr."""
        env = child_env(
            HOME=str(self.home),
            REGISTRY_AUTH_FILE=str(self.home / "auth.json"),
            CONTAINERS_REGISTRIES_CONF=str(self.home / "registries.conf"),
            TMPDIR=str(self.home / "tmp"),
        )
        argv = [self.binary, "--policy", str(self.home / "policy.json"), *args]
        done = subprocess.run(
            argv, capture_output=True, text=True, env=env, timeout=timeout, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"{' '.join(argv)} exited {done.returncode}:\n{done.stderr}{done.stdout}"
            )
        return done.stdout

    def push_layout(
        self, layout: Path, image: Image, registry_host: str, credentials: tuple[str, str]
    ) -> None:
        """Copy every platform of an OCI layout, unchanged, to a registry."""
        self.run(
            "copy",
            "--all",
            "--preserve-digests",
            "--dest-tls-verify=false",
            "--dest-creds",
            ":".join(credentials),
            f"oci:{layout}:{image.tag}",
            f"docker://{registry_host}/{image.reference}",
        )

    def pull_to_dir(self, registry_host: str, reference: str, out: Path) -> None:
        """Copy every platform of ``reference`` into a ``dir:`` directory,
        anonymously, over plain HTTP."""
        self.run(
            "copy",
            "--all",
            "--src-tls-verify=false",
            "--src-no-creds",
            f"docker://{registry_host}/{reference}",
            f"dir:{out}",
        )
