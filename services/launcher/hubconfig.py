"""The JupyterHub settings that run kdash-launcher as a hub-managed service.

`jupyterhub_config.py`:

    from kdash_hub.services.launcher.hubconfig import launcher_service, launcher_roles
    c.JupyterHub.services.append(launcher_service(port=10101, config_file="launcher.py"))
    c.JupyterHub.load_roles.extend(launcher_roles())

Users need the scope `access:services!service=kdash-launcher` (to log in through OAuth and
to call the REST API); notebook servers need it in their token for `kdash-hub services`.
"""

from __future__ import annotations

import sys
from typing import Any

from .serverlifetime import OAUTH_SCOPES
from .settings import SERVICE_NAME

ACCESS_SCOPE = f"access:services!service={SERVICE_NAME}"
# what people read in the hub's Services menu and the launcher's pages: JupyterHub 5.5 and 6.1
# have no display name for a service, so the pack's page.html reads it from `info`
DISPLAY_NAME = "Side services"


def launcher_service(port: int = 10101, *, config_file: str | None = None,
                     ip: str = "127.0.0.1", environment: dict[str, str] | None = None,
                     extra_args: list[str] | None = None) -> dict[str, Any]:
    """The `c.JupyterHub.services` entry: the hub starts, restarts and routes to it."""
    command = [sys.executable, "-m", "kdash_hub.services.launcher"]
    if config_file:
        command.append(f"--config={config_file}")
    command += extra_args or []
    return {
        "name": SERVICE_NAME,
        "url": f"http://{ip}:{port}",
        "command": command,
        "oauth_no_confirm": True,
        # what a user's launcher login may do at the hub on their behalf: read and extend
        # their own servers' lifetimes (serverlifetime.py)
        "oauth_client_allowed_scopes": list(OAUTH_SCOPES),
        "display": True,
        "info": {"display_name": DISPLAY_NAME},
        "environment": dict(environment or {}),
    }


def launcher_roles(user_scopes: tuple[str, ...] = ("self",),
                   server_scopes: tuple[str, ...] = (
                       "users:activity!user", "access:servers!server")) -> list[dict]:
    """Roles granting users (browser + API tokens) and their servers' tokens the access
    scope of the launcher, next to the default scopes."""
    return [
        {"name": "user", "scopes": [*user_scopes, ACCESS_SCOPE]},
        {"name": "server", "scopes": [*server_scopes, ACCESS_SCOPE]},
    ]
