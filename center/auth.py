"""Bearer-token authentication and the three roles of the API.

    principal = Depends(operator)          # 401 without a known token, 403 for another role
    principal = Depends(enterprise_user)   # role enterprise: principal.enterprise_id is its scope
    principal = Depends(officer_user)
    principal = Depends(any_user)

Tokens are compared as SHA-256 digests with hmac.compare_digest against every configured user, so
neither the token nor which user matched leaks through timing, and a config may hold only the digest
(`token_sha256`). Scoping by enterprise is not done here: the queries take `principal.scope` and
filter in SQL (notify/queries.py), so an enterprise can never be handed another's rows.

Guessing is rate-limited: after `center.auth_max_failures` unknown tokens from one client address
within `center.auth_failure_window_s`, that address gets 429 with Retry-After, whatever token it
sends, until the oldest failure leaves the window. The count lives in this process's memory (one
instance; several instances behind a balancer each count their own). A request without any token is
not a guess and is not counted; a success does not clear the count, so an enterprise cannot
interleave its own valid token with guesses at an operator's.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from config.schema import User

Role = str  # operator | enterprise | officer
HOW_TO_AUTH = ("send `Authorization: Bearer <token>` with a token configured under center.users "
               "(ask the monitoring center for one)")


@dataclass(frozen=True, slots=True)
class Principal:
    """The authenticated caller."""

    name: str
    role: Role
    enterprise_id: str | None = None
    officer_id: str | None = None

    @property
    def scope(self) -> str | None:
        """The enterprise whose data alone this caller may see; None for the center and officers."""
        return self.enterprise_id if self.role == "enterprise" else None

    @property
    def actor(self) -> str:
        """How the caller appears in case histories."""
        if self.role == "enterprise":
            return f"enterprise:{self.enterprise_id}"
        if self.role == "officer":
            return f"officer:{self.officer_id}"
        return f"center:{self.name}"


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class UserTable:
    """The configured users, held as (digest, principal) pairs."""

    def __init__(self, users: Sequence[User]) -> None:
        self._entries: list[tuple[bytes, Principal]] = []
        for u in users:
            digest = u.token_sha256 or token_digest(u.token.get_secret_value())  # type: ignore[union-attr]
            self._entries.append((digest.encode(), Principal(u.name, u.role, u.enterprise_id, u.officer_id)))

    def find(self, token: str) -> Principal | None:
        """The user holding `token`; every entry is compared (no early exit) to keep timing flat."""
        presented = token_digest(token).encode()
        found: Principal | None = None
        for digest, principal in self._entries:
            if hmac.compare_digest(presented, digest) and found is None:
                found = principal
        return found


class FailedAuthLimiter:
    """Failed authentications per client address in a sliding window; thread-safe, in memory."""

    def __init__(self, max_failures: int, window_s: float, clock: Callable[[], float] = time.monotonic,
                 max_clients: int = 100_000) -> None:
        self.max_failures, self.window_s, self.clock, self.max_clients = max_failures, window_s, clock, max_clients
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def retry_after(self, client: str) -> float | None:
        """Seconds until `client` may try again, or None when it may now."""
        now = self.clock()
        with self._lock:
            times = self._failures.get(client)
            if times is None:
                return None
            while times and times[0] <= now - self.window_s:
                times.popleft()
            if not times:
                del self._failures[client]
                return None
            return times[0] + self.window_s - now if len(times) >= self.max_failures else None

    def failed(self, client: str) -> None:
        with self._lock:
            times = self._failures.setdefault(client, deque(maxlen=self.max_failures))
            times.append(self.clock())
            self._failures.move_to_end(client)
            if len(self._failures) > self.max_clients:  # bounded memory under a spray of addresses
                self._failures.popitem(last=False)


_bearer = HTTPBearer(auto_error=False, description="A token from center.users")


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(status.HTTP_401_UNAUTHORIZED, detail=f"{detail}; {HOW_TO_AUTH}",
                         headers={"WWW-Authenticate": "Bearer"})


def authenticate(request: Request, token: str | None) -> Principal:
    """The principal for `token` (401 when missing or unknown, 429 after too many unknown ones)."""
    limiter: FailedAuthLimiter = request.app.state.auth_limiter
    client = request.client.host if request.client else "unknown"
    wait = limiter.retry_after(client)
    if wait is not None:
        raise HTTPException(status.HTTP_429_TOO_MANY_REQUESTS, headers={"Retry-After": str(math.ceil(wait))},
                            detail=f"too many failed authentications from {client}; try again in "
                                   f"{math.ceil(wait)} s with a valid token")
    if not token:
        raise _unauthorized("no bearer token")
    users: UserTable = request.app.state.users
    principal = users.find(token)
    if principal is None:
        limiter.failed(client)
        raise _unauthorized("unknown token")
    return principal


def optional_user(request: Request, creds: HTTPAuthorizationCredentials | None = Depends(_bearer)) -> Principal | None:
    """The caller when it sends a token (which must then be valid), None when it sends none."""
    return authenticate(request, creds.credentials) if creds else None


def any_user(request: Request, creds: HTTPAuthorizationCredentials | None = Depends(_bearer)) -> Principal:
    """Any authenticated caller."""
    return authenticate(request, creds.credentials if creds else None)


def require(*roles: Role) -> Callable[..., Principal]:
    """A dependency admitting only `roles` (403 with the reason for the others)."""
    def dependency(principal: Principal = Depends(any_user)) -> Principal:
        if principal.role not in roles:
            raise HTTPException(status.HTTP_403_FORBIDDEN, detail=(
                f"this endpoint is for role {' or '.join(roles)}; your token (user {principal.name!r}) has role "
                f"{principal.role}: use a token of that role, or the endpoints listed for yours in center/API.md"))
        return principal

    dependency.__name__ = f"require_{'_'.join(roles)}"
    return dependency


operator = require("operator")
enterprise_user = require("enterprise")
officer_user = require("officer")
operator_or_enterprise = require("operator", "enterprise")
operator_or_officer = require("operator", "officer")
