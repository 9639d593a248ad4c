"""Who may use the mirror: client networks and htpasswd accounts.

`guard` wraps the site's root resource.  Before anything under it runs, the
client's address must be in the allowlist (else 403 ``DENIED``) and, when an
htpasswd file is configured, the request must carry ``Authorization: Basic``
credentials that match it (else 401 ``UNAUTHORIZED`` with a ``Basic``
challenge).  ``/v2/`` is guarded too: clients learn from its 401 that they
must authenticate.

The htpasswd file holds bcrypt hashes only, as ``htpasswd -B`` writes them
(``$2y$``; ``$2a$``/``$2b$`` too).  A bcrypt check costs milliseconds to
hundreds of milliseconds of CPU on purpose, so it never runs on the reactor
thread: it goes to an injected runner (a small thread pool of its own in the
service), and a successful check is remembered, keyed by the user and a keyed
hash of the password given, so that a pull of fifty layers costs one bcrypt
check, not fifty-one.  Concurrent checks of the same credentials share one.
Failed checks are not remembered: a wrong password always costs bcrypt.

Passwords and hashes never reach a log, an error message or a repr.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import os
import re
import secrets
from collections import Counter, OrderedDict
from collections.abc import Iterable

import bcrypt
from attrs import define, field, frozen
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import IResource, getChildForRequest
from twisted.web.server import NOT_DONE_YET, Request
from zope.interface import implementer

from ..cache.follow import abort_connection
from ..common.coalescer import Coalescer
from ..common.errors import ConfigError
from ..common.networks import Address, Network, parse_networks, peer_address
from ..common.runner import Runner
from .errors import DENIED, UNAUTHORIZED, UNAVAILABLE, RegistryError
from .resource import API_VERSION, write_error

# Not the module's name: "mirrorproxy.access" is the per-request access log's
# namespace (channel.py), and refusals should be told apart from it.
log = Logger("mirrorproxy.access_control")

REALM = "mirrorproxy"
CHALLENGE = (b"WWW-Authenticate", f'Basic realm="{REALM}"'.encode("ascii"))
# Every bcrypt variant `htpasswd -B` and the usual tools write.
_BCRYPT = re.compile(rb"\$2[aby]\$(0[4-9]|[12][0-9]|3[01])\$[./A-Za-z0-9]{53}")
# bcrypt looks at 72 bytes at most; a longer password cannot be checked
# faithfully, and distribution's htpasswd refuses it too.
MAX_PASSWORD_BYTES = 72
# Remembered successful checks; far more than the accounts of any site.
CACHE_ENTRIES = 1024
# How often, at most, the htpasswd file's metadata is looked at for changes.
RELOAD_CHECK_INTERVAL = 2.0
# `htpasswd -B`'s default cost, for a file without entries.
DEFAULT_COST = 5


class HtpasswdError(ConfigError):
    """An htpasswd file that cannot be used; names the file and line, never a hash."""


def parse_htpasswd(data: bytes, source: str) -> dict[bytes, bytes]:
    """``user:hash`` lines -> {user: hash}.  Blank lines and ``#`` comments
    are skipped; anything but a bcrypt hash is refused."""
    entries: dict[bytes, bytes] = {}
    for number, raw in enumerate(data.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith(b"#"):
            continue
        user, sep, hashed = line.partition(b":")
        where = f"{source}, line {number}"
        if not sep or not user:
            raise HtpasswdError(f"{where}: not a 'user:hash' line")
        name = user.decode("utf-8", "replace")
        if not _BCRYPT.fullmatch(hashed):
            raise HtpasswdError(
                f"{where}: user {name!r} does not have a bcrypt hash; "
                "only bcrypt is accepted (create entries with 'htpasswd -B')"
            )
        if user in entries:
            raise HtpasswdError(f"{where}: user {name!r} appears twice")
        entries[user] = hashed
    return entries


@frozen
class AccessSettings:
    """What `guard` enforces: an htpasswd file and client networks, each optional."""

    htpasswd: str | None = None
    networks: tuple[Network, ...] = ()

    @classmethod
    def from_options(cls, htpasswd: str | None, allow: Iterable[str]) -> AccessSettings:
        return cls(htpasswd or None, parse_networks(allow, "--allow"))

    @property
    def enabled(self) -> bool:
        return self.htpasswd is not None or bool(self.networks)


def client_ip(request: Request) -> Address | None:
    """The peer's IP address as `ipaddrs` compares it; None for a peer that
    has none (a UNIX socket)."""
    return peer_address(request.getClientAddress())


def allowed(networks: tuple[Network, ...], request: Request) -> bool:
    """Whether the client may connect at all.

    A client on a UNIX socket has no address to check; whoever can open the
    socket file was let in by its permissions, so it passes.  Headers such
    as X-Forwarded-For are never believed.
    """
    if not networks:
        return True
    address = client_ip(request)
    if address is None:
        return True
    return any(address in network for network in networks)


def basic_credentials(request: Request) -> tuple[bytes, bytes] | None:
    """``Authorization: Basic`` -> (user, password) as bytes, or None."""
    header = request.getHeader(b"authorization")
    if header is None:
        return None
    scheme, _, encoded = header.strip().partition(b" ")
    if scheme.lower() != b"basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    user, sep, password = decoded.partition(b":")
    if not sep or not user:
        return None
    return user, password


def _bcrypt_matches(password: bytes, hashed: bytes) -> bool:
    """The slow part; runs in a thread.  bcrypt releases the GIL while it hashes."""
    if len(password) > MAX_PASSWORD_BYTES:
        return False
    try:
        return bcrypt.checkpw(password, hashed)
    except ValueError:
        return False


@functools.lru_cache(maxsize=4)
def dummy_hash(cost: int) -> bytes:
    """What an unknown user's password is checked against.

    Of the same cost as the file's entries, so that a wrong user name costs
    what a wrong password costs and does not reveal which names exist.
    Made once per cost, in the runner (it costs a check itself).
    """
    return bcrypt.hashpw(b"not a password", bcrypt.gensalt(cost))


def _check_unknown_user(password: bytes, cost: int) -> bool:
    _bcrypt_matches(password, dummy_hash(cost))
    return False


def usual_cost(entries: dict[bytes, bytes]) -> int:
    """The bcrypt cost most entries have (the highest of a tie): the cost an
    unknown user's check must take."""
    costs = Counter(int(hashed[4:6]) for hashed in entries.values())
    if not costs:
        return DEFAULT_COST
    return max(costs, key=lambda cost: (costs[cost], cost))


@frozen
class _FileState:
    """What identifies a version of the htpasswd file on disk."""

    inode: int
    mtime_ns: int
    size: int

    @classmethod
    def of(cls, path: str) -> _FileState:
        st = os.stat(path)
        return cls(st.st_ino, st.st_mtime_ns, st.st_size)


@define(eq=False)
class PasswordFile:
    """An htpasswd file, re-read when it changes, and its remembered checks."""

    path: str
    _run: Runner
    _clock: IReactorTime
    _entries: dict[bytes, bytes] = field(factory=dict, repr=False)
    _state: _FileState | None = field(default=None, repr=False)
    _next_look: float = field(default=0.0, repr=False)
    # (user, keyed hash of the password given, stored hash) of successful checks.
    _good: OrderedDict[tuple[bytes, bytes, bytes], None] = field(factory=OrderedDict, repr=False)
    # A per-process key: the remembered digests are useless outside it.
    _key: bytes = field(factory=lambda: secrets.token_bytes(32), repr=False)
    _checks: Coalescer = field(factory=Coalescer, repr=False)
    _dummy_cost: int = DEFAULT_COST
    bcrypt_checks: int = 0

    @classmethod
    def load(cls, path: str, run: Runner, clock: IReactorTime) -> PasswordFile:
        """Read the file now; HtpasswdError if it is unusable (at start, fatal)."""
        passwords = cls(path, run, clock)
        passwords._state, passwords._entries = passwords._read()
        passwords._next_look = clock.seconds() + RELOAD_CHECK_INTERVAL
        passwords._prepare_dummy()
        log.info("{count} accounts in {path}", count=len(passwords._entries), path=path)
        return passwords

    def _read(self) -> tuple[_FileState, dict[bytes, bytes]]:
        try:
            state = _FileState.of(self.path)
            with open(self.path, "rb") as f:
                data = f.read()
        except OSError as e:
            raise HtpasswdError(f"cannot read htpasswd file {self.path}: {e.strerror}") from None
        return state, parse_htpasswd(data, self.path)

    def _reload_if_changed(self) -> None:
        # A stat at most every RELOAD_CHECK_INTERVAL, and a read of a small
        # file when it changed: cheap enough for the reactor thread, and it
        # keeps the entries owned by the reactor thread alone.
        now = self._clock.seconds()
        if now < self._next_look:
            return
        self._next_look = now + RELOAD_CHECK_INTERVAL
        try:
            if _FileState.of(self.path) == self._state:
                return
            state, entries = self._read()
        except (OSError, HtpasswdError) as e:
            # Keep serving the accounts we have: a half-edited or vanished
            # file must neither lock everyone out nor let everyone in.
            log.error(
                "htpasswd file {path} unusable, keeping the previous {count} accounts: {error}",
                path=self.path,
                count=len(self._entries),
                error=str(e),
            )
            return
        self._state, self._entries = state, entries
        self._good.clear()
        self._prepare_dummy()
        log.info("reloaded {path}: {count} accounts", path=self.path, count=len(entries))

    def _prepare_dummy(self) -> None:
        """Make the unknown users' dummy hash now, in the runner, so that the
        first unknown user does not pay for making it (and stand out)."""
        self._dummy_cost = usual_cost(self._entries)
        self._run(dummy_hash, self._dummy_cost).addErrback(
            lambda f: log.failure("cannot make the dummy bcrypt hash", f)
        )

    def check(self, user: bytes, password: bytes) -> Deferred[bool]:
        """Whether ``password`` is ``user``'s; bcrypt runs off the reactor
        thread, and only when this pair has not already passed."""
        self._reload_if_changed()
        hashed = self._entries.get(user)
        digest = hmac.new(self._key, password, hashlib.sha256).digest()
        if hashed is not None:
            key = (user, digest, hashed)
            if key in self._good:
                self._good.move_to_end(key)
                d: Deferred[bool] = Deferred()
                d.callback(True)
                return d

        async def bcrypt_check() -> bool:
            self.bcrypt_checks += 1
            if hashed is None:
                return bool(await self._run(_check_unknown_user, password, self._dummy_cost))
            matches = await self._run(_bcrypt_matches, password, hashed)
            if not matches:
                return False
            # The file may have been reloaded meanwhile; remember only what still holds.
            if self._entries.get(user) == hashed:
                self._good[(user, digest, hashed)] = None
                while len(self._good) > CACHE_ENTRIES:
                    self._good.popitem(last=False)
            return True

        def work() -> Deferred[bool]:
            return Deferred.fromCoroutine(bcrypt_check())

        return self._checks.run((user, digest, hashed), work)


@implementer(IResource)
@define(eq=False)
class AccessGuard:
    """The site's root when access is restricted: checks, then hands the
    request to the resource tree it guards."""

    _wrapped: IResource
    _networks: tuple[Network, ...] = ()
    _passwords: PasswordFile | None = None
    # The whole path is ours to look at before anything below sees it.
    isLeaf = True

    def getChildWithDefault(self, name: bytes, request: Request) -> IResource:
        return self

    def putChild(self, path: bytes, child: IResource) -> None:
        raise NotImplementedError("the guard wraps a tree; add children to the tree")

    def render(self, request: Request) -> object:
        if not allowed(self._networks, request):
            log.info(
                "refused {client}: not in an allowed network",
                client=str(client_ip(request)),
            )
            return self._refuse(request, RegistryError(403, DENIED, "client network not allowed"))
        if self._passwords is None:
            return self._pass(request)
        credentials = basic_credentials(request)
        if credentials is None:
            return self._refuse(request, _unauthorized("authentication required"))
        user, password = credentials
        # The check may outlive the client; after a disconnect nothing may
        # be written, and notifyFinish is the only way to know.
        gone: list[bool] = []
        request.notifyFinish().addBoth(lambda _: gone.append(True))
        d = self._passwords.check(user, password)
        d.addCallback(self._checked, request, user, gone)
        d.addErrback(self._crashed, request, gone)
        return NOT_DONE_YET

    def _checked(self, matches: bool, request: Request, user: bytes, gone: list[bool]) -> None:
        if gone:
            return
        if not matches:
            log.info(
                "refused {client}: wrong user name or password for {user!r}",
                client=str(client_ip(request)),
                user=user.decode("utf-8", "replace"),
            )
            self._refuse(request, _unauthorized("wrong user name or password"))
            return
        request.render(getChildForRequest(self._wrapped, request))

    def _crashed(self, failure: Failure, request: Request, gone: list[bool]) -> None:
        log.failure("checking credentials or serving {path} failed", failure, path=request.path)
        if gone or request.finished:
            return
        if request.startedWriting:
            abort_connection(request)
        else:
            self._refuse(request, RegistryError(500, UNAVAILABLE, "internal error"))

    def _pass(self, request: Request) -> object:
        resource = getChildForRequest(self._wrapped, request)
        return resource.render(request)

    def _refuse(self, request: Request, error: RegistryError) -> object:
        request.setHeader(*API_VERSION)
        write_error(request, error)
        return NOT_DONE_YET


def _unauthorized(message: str) -> RegistryError:
    return RegistryError(401, UNAUTHORIZED, message, headers=(CHALLENGE,))


def guard(
    resource: IResource, settings: AccessSettings, run: Runner, clock: IReactorTime
) -> IResource:
    """``resource`` behind the checks ``settings`` asks for; ``resource``
    itself when it asks for none.  HtpasswdError if the file is unusable."""
    if not settings.enabled:
        return resource
    passwords = PasswordFile.load(settings.htpasswd, run, clock) if settings.htpasswd else None
    return AccessGuard(resource, settings.networks, passwords)
