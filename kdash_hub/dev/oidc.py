"""A real OpenID Connect provider (panva oidc-provider on node) on 127.0.0.1.

`OIDCProvider(clients=..., users=...)` writes the JSON config, starts
`node oidc_provider.mjs CONFIG`, waits for "READY". Users log in through the provider's
small HTML form (`login`, `password` fields), so a browser or a scripted flow can sign in.
`set_users()` changes the accounts while it runs (removed user / group for refresh tests).
"""

from __future__ import annotations

import json
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from .ports import free_port
from .process import terminate

SCRIPT = Path(__file__).with_name("oidc_provider.mjs")
REPO_ROOT = Path(__file__).resolve().parents[2]

DEMO_USERS: dict[str, dict] = {
    "alice": {"password": "alice-idp", "claims": {
        "preferred_username": "alice", "name": "Alice Liddell", "email": "alice@example.org",
        "email_verified": True, "groups": ["admins", "gpu-users"]}},
    "dave": {"password": "dave-idp", "claims": {
        "preferred_username": "dave", "name": "Dave Lister", "email": "dave@example.org",
        "email_verified": True, "groups": ["datasci"]}},
}


def client(client_id: str, redirect_uris: list[str], secret: str | None = None,
           post_logout_redirect_uris: list[str] | None = None) -> dict:
    """Metadata of a confidential web client using the code flow and refresh tokens;
    `post_logout_redirect_uris`: where RP-initiated logout may send the browser back."""
    return {
        "client_id": client_id, "client_secret": secret or f"{client_id}-secret",
        "redirect_uris": redirect_uris, "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"], "token_endpoint_auth_method": "client_secret_post",
        "post_logout_redirect_uris": post_logout_redirect_uris or [],
    }


@dataclass
class OIDCProvider:
    """One oidc-provider process; `issuer` is http://127.0.0.1:PORT."""

    clients: list[dict] = field(default_factory=list)
    users: dict[str, dict] = field(default_factory=lambda: json.loads(json.dumps(DEMO_USERS)))
    ttl: dict[str, int] = field(default_factory=dict)
    port: int = 0
    workdir: Path | None = None
    node: str = field(default_factory=lambda: shutil.which("node") or "node")
    admin_token: str = field(default_factory=lambda: secrets.token_hex(16))
    process: subprocess.Popen | None = None

    @property
    def issuer(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return Path(self.workdir) / "oidc-provider.log"

    def start(self, timeout: float = 20.0) -> OIDCProvider:
        self.workdir = Path(self.workdir or tempfile.mkdtemp(prefix="kdash-oidc-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()
        cfg = self.workdir / "oidc-config.json"
        cfg.write_text(json.dumps({
            "port": self.port, "issuer": self.issuer, "admin_token": self.admin_token,
            "clients": self.clients, "users": self.users, "ttl": self.ttl,
            "node_modules": str(REPO_ROOT / "node_modules"),
        }))
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child
        self.process = subprocess.Popen(
            [self.node, "--no-warnings", str(SCRIPT), str(cfg)],
            stdout=subprocess.PIPE, stderr=log, start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout
        assert self.process.stdout is not None
        line = b""
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if line.startswith(b"READY"):
                return self
            if not line and self.process.poll() is not None:
                break
        self.stop()
        raise RuntimeError("oidc-provider did not start:\n"
                           + self.log_path.read_text(errors="replace")[-2000:])

    def set_users(self, users: dict[str, dict]) -> None:
        """Replace the provider's accounts while it runs."""
        self.users = users
        req = urllib.request.Request(
            f"{self.issuer}/_admin/users", data=json.dumps(users).encode(), method="PUT",
            headers={"x-admin-token": self.admin_token, "content-type": "application/json"})
        with urllib.request.urlopen(req, timeout=5):
            pass

    def stop(self) -> None:
        proc, self.process = self.process, None
        if proc is None:
            return
        terminate(proc, signal.SIGTERM)
        if proc.stdout:
            proc.stdout.close()
