"""A minimal Ceph cluster and its S3 gateway, for the storage contract tests:
one monitor, one OSD keeping its objects in memory (memstore), one radosgw
(beast) on 127.0.0.1, cephx on, one S3 user.

RADOS Gateway is here because it is strict where a lenient S3 server is not:
it checks every request's SigV4 signature and refuses a body whose sha256 is
not the declared ``x-amz-content-sha256``.

Everything the cluster has lives in one directory of its own: its config
file (passed with ``-c`` to every program, so /etc/ceph is never read),
keyrings, the monitor's and the OSD's data, run directory and admin sockets.
The daemons run in the foreground (``-d``) and log to stderr, which goes to
a log file per daemon in that directory; nothing goes to /var/lib/ceph,
/var/run/ceph or /var/log/ceph.
"""

from __future__ import annotations

import secrets
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

from attrs import define, field, frozen

from .processes import POLL_INTERVAL, Process, child_env, free_port, tail
from .s3service import S3Service
from .tools import require_tool

START_TIMEOUT = 90.0  # about 3 s; the machine's cores may be busy with other tests
LOG_TAIL_LINES = 40

MON_ID = "a"
OSD_ID = 0
RGW_NAME = "client.rgw"
# The name of the zone group radosgw creates on its first start. (It takes
# any region in a signature's scope or a LocationConstraint, us-east-1 too.)
REGION = "default"
S3_USER = "mirror-tests"


@frozen
class CephPrograms:
    ceph_mon: str
    ceph_osd: str
    radosgw: str
    radosgw_admin: str
    ceph: str
    ceph_authtool: str
    monmaptool: str

    @classmethod
    def require(cls) -> CephPrograms:
        """The programs on PATH, or skip (fail under CI) naming the package."""
        return cls(
            ceph_mon=require_tool("ceph-mon", "ceph-mon"),
            ceph_osd=require_tool("ceph-osd", "ceph-osd"),
            radosgw=require_tool("radosgw", "radosgw"),
            radosgw_admin=require_tool("radosgw-admin", "ceph-common"),
            ceph=require_tool("ceph", "ceph-common"),
            ceph_authtool=require_tool("ceph-authtool", "ceph-common"),
            monmaptool=require_tool("monmaptool", "ceph-base"),
        )


class CephStartError(RuntimeError):
    """The cluster did not come up; the message has each daemon's log tail."""


def _config(directory: Path, fsid: str, mon_port: int, rgw_port: int) -> str:
    d = directory
    return f"""\
[global]
fsid = {fsid}
# msgr2 only, on loopback: one port for the monitor, nothing on other hosts.
mon host = v2:127.0.0.1:{mon_port}
public addr = 127.0.0.1
ms bind msgr1 = false
ms bind ipv6 = false
auth cluster required = cephx
auth service required = cephx
auth client required = cephx
auth allow insecure global id reclaim = false
keyring = {d}/keyring
run dir = {d}/run
admin socket = {d}/run/$name.asok
pid file =
crash dir = {d}/crash
# The daemons log to stderr (-d); the one-shot tools log nowhere.
log to file = false
# One OSD: pools of one copy, placed on that OSD, few placement groups
# (radosgw makes seven pools), no autoscaler (there is no manager).
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon allow pool size one = true
mon warn on pool no redundancy = false
mon max pg per osd = 1000

[mon]
mon data = {d}/mon.$id
mon cluster log to file = false
# A nearly full disk under the test directory must not stop the monitor.
mon data avail crit = 0
mon data avail warn = 0
# Every pool radosgw creates is a few map changes; proposing each at once
# instead of after a second takes the start-up from about 12 s to 3 s.
paxos propose interval = 0.1
paxos min wait = 0.01
# Small caches: this cluster shares the machine with the other tests.
mon memory target = 536870912
rocksdb cache size = 134217728

[osd]
osd data = {d}/osd.$id
osd journal = {d}/osd.$id/journal
keyring = {d}/osd.$id/keyring
# Objects in memory: nothing to format, nothing left on disk. The device
# size is what the OSD reports as its capacity, not memory it takes.
osd objectstore = memstore
memstore device bytes = 4294967296
osd memory target = 536870912

[{RGW_NAME}]
rgw data = {d}/rgw
rgw frontends = beast endpoint=127.0.0.1:{rgw_port}
rgw thread pool size = 16
# radosgw waits for each pool it makes to show in its map of the cluster,
# and asks for a newer map on its client's tick: every 5 s by default,
# which is most of the start-up time when the wait falls just after one.
objecter tick interval = 0.5
"""


@define(eq=False)
class CephRgw:
    """A running cluster; ``service`` is its gateway as the tests see it."""

    directory: Path
    service: S3Service
    daemons: list[Process]
    # Seconds from the first command to the S3 user's creation.
    start_seconds: float

    @classmethod
    def start(
        cls, programs: CephPrograms, directory: Path, timeout: float = START_TIMEOUT
    ) -> CephRgw:
        """Bootstrap the cluster in ``directory``, start its daemons, wait
        until radosgw answers and make an S3 user.

        On failure every daemon started is stopped and the error's message
        has the tail of each daemon's log.
        """
        started = time.monotonic()
        bootstrap = _Bootstrap(programs, directory, started + timeout)
        try:
            service = bootstrap.run()
        except BaseException as error:
            # The logs as they were at the failure, before the shutdown's lines.
            tails = bootstrap.log_tails()
            bootstrap.stop()
            if isinstance(error, Exception):
                raise CephStartError(
                    f"Ceph RGW did not start in {directory}: {error}\n{tails}"
                ) from error
            raise
        return cls(directory, service, bootstrap.daemons, time.monotonic() - started)

    def stop(self) -> None:
        """Stop radosgw, then the OSD, then the monitor; each is waited for
        (and killed if it does not exit), so no process is left behind."""
        _stop_all(self.daemons)


def _stop_all(daemons: Sequence[Process]) -> None:
    for daemon in reversed(daemons):
        daemon.stop()


@define(eq=False)
class _Bootstrap:
    """The steps from an empty directory to a gateway with a user, in order."""

    programs: CephPrograms
    directory: Path
    deadline: float
    daemons: list[Process] = field(factory=list)

    @property
    def conf(self) -> Path:
        return self.directory / "ceph.conf"

    def run(self) -> S3Service:
        for sub in ("run", "crash", "rgw", f"mon.{MON_ID}", f"osd.{OSD_ID}", "log"):
            (self.directory / sub).mkdir(parents=True, exist_ok=True)
        fsid = str(uuid.uuid4())
        mon_port, rgw_port = free_port(), free_port()
        self.conf.write_text(_config(self.directory, fsid, mon_port, rgw_port))
        self._write_keyrings()
        self._start_monitor(fsid, mon_port)
        self._start_osd()
        endpoint = self._start_gateway(rgw_port)
        access_key, secret_key = self._create_user()
        return S3Service("ceph-rgw", endpoint, REGION, access_key, secret_key)

    def _write_keyrings(self) -> None:
        """The cluster's keyring (the monitor imports every entity in it,
        with its caps, when it makes its store, so no auth commands are
        needed later) and the OSD's own."""
        authtool = self.programs.ceph_authtool
        keyring = str(self.directory / "keyring")
        osd_key = self._command("keys", [authtool, "--gen-print-key"]).strip()
        entities = [
            ("mon.", ["--gen-key"], {"mon": "allow *"}),
            ("client.admin", ["--gen-key"], {"mon": "allow *", "osd": "allow *", "mgr": "allow *"}),
            (RGW_NAME, ["--gen-key"], {"mon": "allow rw", "osd": "allow rwx", "mgr": "allow rw"}),
            (
                f"osd.{OSD_ID}",
                ["--add-key", osd_key],
                {"mon": "allow profile osd", "osd": "allow *", "mgr": "allow profile osd"},
            ),
        ]
        for number, (name, key, caps) in enumerate(entities):
            create = ["--create-keyring"] if number == 0 else []
            cap_args = [arg for service, cap in caps.items() for arg in ("--cap", service, cap)]
            self._command("keys", [authtool, keyring, *create, "-n", name, *key, *cap_args])
        osd_keyring = str(self.directory / f"osd.{OSD_ID}" / "keyring")
        osd_entity = ["-n", f"osd.{OSD_ID}", "--add-key", osd_key]
        self._command("keys", [authtool, osd_keyring, "--create-keyring", *osd_entity])

    def _start_monitor(self, fsid: str, port: int) -> None:
        monmap = str(self.directory / "monmap")
        self._command(
            "monmap",
            [self.programs.monmaptool, "--create", "--fsid", fsid,
             "--addv", MON_ID, f"[v2:127.0.0.1:{port}]", monmap],
        )
        keyring = str(self.directory / "keyring")
        mon = [self.programs.ceph_mon, "-c", str(self.conf), "-i", MON_ID]
        self._command("mon-mkfs", [*mon, "--mkfs", "--monmap", monmap, "--keyring", keyring])
        self._daemon("ceph-mon", [*mon, "-d"])

    def _start_osd(self) -> None:
        # ``osd new`` waits for the monitor's quorum: it is also the
        # monitor's readiness check.
        osd_uuid = str(uuid.uuid4())
        self._command(
            "osd-new",
            [self.programs.ceph, "-c", str(self.conf), "--connect-timeout",
             str(int(START_TIMEOUT)), "osd", "new", osd_uuid, str(OSD_ID)],
        )
        osd = [self.programs.ceph_osd, "-c", str(self.conf), "-i", str(OSD_ID)]
        self._command("osd-mkfs", [*osd, "--mkfs", "--osd-uuid", osd_uuid])
        self._daemon("ceph-osd", [*osd, "-d"])

    def _start_gateway(self, port: int) -> str:
        """Start radosgw; its endpoint once it answers.

        radosgw first makes its pools and zone, which waits for the OSD to
        be up, and only then listens: an answer on its port means ready.
        """
        gateway = [self.programs.radosgw, "-c", str(self.conf), "-n", RGW_NAME]
        self._daemon("radosgw", [*gateway, "-d"])
        endpoint = f"http://127.0.0.1:{port}"
        self._wait_until(lambda: _answers(endpoint), f"an HTTP answer on {endpoint}")
        return endpoint

    def _create_user(self) -> tuple[str, str]:
        """A new S3 user; its access key and secret key."""
        access_key = secrets.token_hex(10).upper()
        secret_key = secrets.token_urlsafe(30)
        self._command(
            "user-create",
            [self.programs.radosgw_admin, "-c", str(self.conf), "-n", "client.admin",
             "user", "create", "--uid", S3_USER, "--display-name", "mirrorproxy tests",
             "--access-key", access_key, "--secret-key", secret_key],
        )
        return access_key, secret_key

    def _wait_until(self, ready: Callable[[], bool], what: str) -> None:
        """Poll ``ready``; fail at once if a daemon dies, or at the deadline."""
        while not ready():
            self._check(what)
            time.sleep(POLL_INTERVAL)

    def _check(self, what: str) -> None:
        for daemon in self.daemons:
            if not daemon.running():
                status = daemon.stop()
                raise RuntimeError(f"{daemon.name} exited with {status} while waiting for {what}")
        if time.monotonic() > self.deadline:
            raise TimeoutError(f"no {what} within the start-up deadline")

    def _daemon(self, name: str, argv: Sequence[str]) -> Process:
        process = Process.start(name, argv, self.directory / "log" / f"{name}.log",
                                env=child_env())
        self.daemons.append(process)
        return process

    def _command(self, step: str, argv: Sequence[str]) -> str:
        """Run one bootstrap command to completion; fail at once if a
        daemon it depends on dies, or at the deadline."""
        log_path = self.directory / "log" / f"{step}.log"
        with open(log_path, "ab") as log:
            child = subprocess.Popen(
                list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log,
                env=child_env(), start_new_session=True,
            )
            try:
                output = self._wait(child, step)
            finally:
                if child.poll() is None:
                    child.kill()
                    child.wait()
        if child.returncode != 0:
            raise RuntimeError(
                f"{step}: {' '.join(argv)} exited with {child.returncode}:\n"
                f"{output.decode(errors='replace')}{_tail(log_path)}"
            )
        return output.decode(errors="replace")

    def _wait(self, child: subprocess.Popen[bytes], step: str) -> bytes:
        while True:
            try:
                output, _ = child.communicate(timeout=POLL_INTERVAL)
                return output
            except subprocess.TimeoutExpired:
                self._check(f"{step} to finish")

    def stop(self) -> None:
        _stop_all(self.daemons)

    def log_tails(self) -> str:
        """The last lines of each daemon's log, for a failure message."""
        return "\n".join(
            f"--- {daemon.name} log, last {LOG_TAIL_LINES} lines:\n"
            f"{_tail(daemon.log_path)}"
            for daemon in self.daemons
        ) or "(no daemon was started)"


def _tail(path: Path) -> str:
    """The last lines of a daemon's log; on stderr, Ceph ends each entry
    with an empty line, which would halve what the tail shows."""
    lines = [line for line in tail(path, 2 * LOG_TAIL_LINES).splitlines() if line.strip()]
    return "\n".join(lines[-LOG_TAIL_LINES:]) or f"(nothing in {path})"


# Straight to 127.0.0.1, whatever proxy the environment names.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _answers(endpoint: str) -> bool:
    """Whether anything answers HTTP at ``endpoint`` (an anonymous bucket
    listing: 200 from radosgw)."""
    try:
        with _DIRECT.open(endpoint, timeout=2):
            return True
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False
