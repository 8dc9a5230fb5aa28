"""The identity -> hub username rule, in one place.

LDAP `uid` and the username claim of a *trusted* OIDC provider name the same person, so they
map to the same hub user. An untrusted provider's users get `<provider>-<name>`, so nobody
can take over an account by choosing a username at an identity provider.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from .errors import LoginRefused

DEFAULT_PATTERN = r"^[a-z][a-z0-9._-]*$"


class UsernameRefused(LoginRefused):
    """A username the hub will not accept; the message says why (shown on the login page)."""

    def __init__(self, message: str):
        super().__init__(403, message)


@dataclass(frozen=True)
class UsernameRule:
    """Normalise and validate names; build hub usernames for each backend."""

    pattern: str = DEFAULT_PATTERN
    max_length: int = 64
    untrusted_template: str = "{provider}-{username}"

    def normalize(self, name: str) -> str:
        """NFKC-fold, strip, lowercase: before any check (upstream checks first)."""
        return unicodedata.normalize("NFKC", name or "").strip().lower()

    def check(self, name: str) -> str:
        """The normalised name, or UsernameRefused with a reason a person understands."""
        name = self.normalize(name)
        if not name:
            raise UsernameRefused("Enter a username.")
        if len(name) > self.max_length:
            raise UsernameRefused(f"Usernames are at most {self.max_length} characters long.")
        if not re.fullmatch(self.pattern, name):
            raise UsernameRefused(
                "Usernames may only contain lowercase letters a-z, digits, '.', '_' and '-', "
                "and must start with a letter."
            )
        return name

    def ldap_username(self, uid: str) -> str:
        return self.check(uid)

    def oidc_username(self, provider: str, name: str, trusted: bool) -> str:
        name = self.check(name)
        if trusted:
            return name
        return self.check(self.untrusted_template.format(provider=provider, username=name))
