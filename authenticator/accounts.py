"""Which sign-in identities may reach which hub account: the account-binding rules.

A hub account records, in its auth_state (encrypted, written only by the hub), the
identities bound to it and how each got there::

    "identities": {"ldap": "<uid>", "oidc:<p>": "<sub>"},
    "links": {"ldap": "created", "oidc:<p>": "rule" | "user" | "created"}

`created`: the identity that made the account. `rule`: bound by a rule the admin configured
(`ldap_link_claim` of a provider federated with the directory). `user`: linked by the user
while signed in with an identity already bound (the link page). Nothing else binds: an
identity of one backend that lands on an account made by another is refused with a message
saying how to sign in and how to link. State written by 0.1 (identities without `links`)
keeps only the identity that made the account (the directory's, when it has one): 0.1
bound provider identities silently, so those must be linked again (or come under a rule).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .errors import LoginRefused

CREATED, RULE, USER = "created", "rule", "user"
LDAP = "ldap"
PENDING_SECONDS = 30.0


class AccountRefused(LoginRefused):
    """This identity may not sign in to this account (yet); the message says what to do."""

    def __init__(self, message: str, detail: str = "", status: int = 403):
        super().__init__(status, message, detail)


@dataclass
class Bindings:
    """The identities bound to one hub account, and how each was bound."""

    identities: dict[str, str] = field(default_factory=dict)
    links: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_state(cls, state: dict | None) -> Bindings:
        state = state or {}
        identities = {k: str(v) for k, v in (state.get("identities") or {}).items()
                      if isinstance(k, str) and v is not None}
        links = state.get("links")
        if isinstance(links, dict):
            return cls({k: v for k, v in identities.items() if k in links},
                       {k: str(links[k]) for k in identities if k in links})
        if not identities:
            return cls()
        # 0.1 state: keep the identity that made the account; drop silent links
        origin = LDAP if LDAP in identities else state.get("backend")
        if origin not in identities:
            origin = sorted(identities)[0]
        return cls({origin: identities[origin]}, {origin: CREATED})

    @property
    def empty(self) -> bool:
        return not self.identities

    def bind(self, backend: str, subject: str, how: str) -> None:
        self.identities[backend] = subject
        self.links[backend] = how

    def to_state(self) -> dict[str, Any]:
        return {"identities": dict(self.identities), "links": dict(self.links)}


@dataclass
class Decision:
    """The outcome for one sign-in: the bindings to store, and what was new."""

    bindings: Bindings
    new: list[str] = field(default_factory=list)
    previous: dict[str, Any] = field(default_factory=dict)  # the account's auth_state


class PendingClaims:
    """Accounts being made right now, per username, so two sign-ins of different identities
    that both find a name unclaimed cannot both claim it (the hub saves auth_state a few
    awaits after `authenticate` returns)."""

    def __init__(self, window: float = PENDING_SECONDS):
        self.window = window
        self._claims: dict[str, tuple[str, str, float]] = {}

    def claim(self, username: str, backend: str, subject: str) -> bool:
        now = time.monotonic()
        held = self._claims.get(username)
        if held and held[:2] != (backend, subject) and now - held[2] < self.window:
            return False
        self._claims[username] = (backend, subject, now)
        return True


def decide(username: str, bindings: Bindings, backend: str, subject: str, *,
           ruled_ldap_uid: str | None, describe: Callable[[str], str],
           link_url: str) -> Decision:
    """May identity (backend, subject) sign in to `username`, whose bindings are given?

    `ruled_ldap_uid`: the directory account the admin's rule says this identity is.
    Raises AccountRefused with the message a person sees.
    """
    bound = bindings.identities.get(backend)
    if bound is not None:
        if bound != subject:
            what = ("a different directory account" if backend == LDAP
                    else f"a different account at {describe(backend)}")
            raise AccountRefused(
                f"The account {username!r} belongs to {what}. Sign in with the account "
                "it was made with, or ask an administrator.",
                f"{backend} subject {subject!r} != bound {bound!r}")
        return Decision(bindings)
    if bindings.empty:
        if ruled_ldap_uid is not None:
            bindings.bind(LDAP, ruled_ldap_uid, RULE)
            bindings.bind(backend, subject, RULE)
            return Decision(bindings, [LDAP, backend])
        bindings.bind(backend, subject, CREATED)
        return Decision(bindings, [backend])
    if ruled_ldap_uid is not None and bindings.identities.get(LDAP) == ruled_ldap_uid:
        bindings.bind(backend, subject, RULE)
        return Decision(bindings, [backend])
    raise collision(username, bindings, backend, describe, link_url)


def collision(username: str, bindings: Bindings | None, backend: str,
              describe: Callable[[str], str], link_url: str) -> AccountRefused:
    """The refusal for an identity landing on an account another sign-in method owns."""
    owners = sorted(bindings.identities) if bindings and not bindings.empty else [LDAP]
    ways = " or ".join(describe(b) for b in owners)
    return AccountRefused(
        f"The username {username!r} belongs to an account that signs in with {ways}. "
        f"Sign in that way; or, if that account is yours, sign in that way and link "
        f"{describe(backend)} to it on the account-linking page ({link_url}).",
        f"{backend} identity refused: account bound to {owners}")
