"""KDashAuthenticator: one login for LDAP and OIDC.

Use with ``c.JupyterHub.authenticator_class = "kdash"``; see `base.KDashAuthenticator`.
"""

from .base import KDashAuthenticator
from .ldap_backend import LDAPBackend
from .oidc_backend import OIDCBackend

__all__ = ["KDashAuthenticator", "LDAPBackend", "OIDCBackend"]
