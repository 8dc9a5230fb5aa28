"""How the owner's notebook connects to an instance: host, port, user, database, and the
password on request.

Host and port come from the signed record (the instance's Service and the port the
template's `connection:` names), the user and database from its signed public values, the
password from the instance's record Secret (where the launch kept the secret variables).
Only the owner is ever shown the password, and only when they ask for it (a POST), so it
is never in a page or a list by default. Anyone else who may not manage the instance gets
the same 404 as for an instance that doesn't exist.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from .instances import Actor, InstanceManager, LauncherError
from .records import InstanceRecord, secret_values


def _password(secret: dict[str, Any], rec: InstanceRecord, variable: str) -> str | None:
    """The value of `variable`: a secret one from the record Secret's data, else the
    record's public values (a template may keep a password in a plain variable)."""
    kept = secret_values(secret)
    value = kept.get(variable) if isinstance(kept, dict) else None
    if value is None:
        value = rec.values.get(variable)
    return value if isinstance(value, str) else None


def describe_connection(manager: InstanceManager, rec: InstanceRecord,
                        secret: dict[str, Any] | None = None) -> dict[str, Any]:
    """The connection details of `rec`; the password only when `secret` is given."""
    template = manager.catalog.get(rec.template)
    conn = template.connection if template else None
    proxy = rec.proxy or {}
    host = proxy.get("service") or None
    port = (proxy.get("address_port") or proxy.get("service_port")) if host else None
    info: dict[str, Any] = {
        "host": host, "port": port,
        "address": f"{host}.{rec.namespace}.svc:{port}" if host else None,
        "user": rec.values.get(conn.user) if conn and conn.user else None,
        "database": rec.values.get(conn.database) if conn and conn.database else None,
        "has_password": bool(conn and conn.password), "password": None,
        "web_label": template.web_label if template else "",
    }
    if secret is not None and conn and conn.password:
        info["password"] = _password(secret, rec, conn.password)
    return info


def connection_url(manager: InstanceManager, rec: InstanceRecord,
                   info: dict[str, Any]) -> str | None:
    """The URL a notebook connects with (`info` from describe_connection: with the
    password only when it was revealed); None without a Service or a scheme."""
    template = manager.catalog.get(rec.template)
    conn = template.connection if template else None
    proxy = rec.proxy or {}
    scheme = conn.scheme if conn and conn.scheme else ("http" if proxy.get("http") else "")
    if not info["host"] or not scheme:
        return None
    return _url(scheme, info, proxy, manager.path_prefix(rec.owner, rec.name))


def _url(scheme: str, info: dict[str, Any], proxy: dict[str, Any], prefix: str) -> str:
    """scheme://user:password@host:port/path (no credentials for http): the password
    only when revealed; a web app configured with its proxy path (strip_prefix off) is
    served under that path."""
    userinfo = ""
    if scheme not in ("http", "https"):  # an S3 or web endpoint takes no credentials in it
        userinfo = quote(info["user"] or "", safe="")
        if info["password"] is not None:
            userinfo += ":" + quote(info["password"], safe="")
    path = "/"
    if info["database"]:
        path += quote(info["database"], safe="")
    elif scheme == "http" and not proxy.get("strip_prefix", True) \
            and "address_port" not in proxy:
        path = prefix + "/"
    return f"{scheme}://{userinfo + '@' if userinfo else ''}{info['host']}:{info['port']}{path}"


async def connection(manager: InstanceManager, actor: Actor, owner: str, name: str,
                     *, reveal: bool = False, is_user: bool = True) -> dict[str, Any]:
    """`owner`'s instance `name` as the actor may see it (404 if they may not manage it);
    with `reveal` the password too, for the owner alone (403 for an admin)."""
    secret, rec = await manager.record_for(actor, owner, name)
    return _connection(manager, actor, secret, rec, reveal=reveal, is_user=is_user)


async def connection_and_notebook(manager: InstanceManager, actor: Actor, owner: str,
                                  name: str, *, reveal: bool = False, is_user: bool = True,
                                  ) -> tuple[dict[str, Any], dict[str, Any]]:
    """`connection`, and the notebook variables (`_notebook`), from one read of the record
    (the details page and the details API show both)."""
    secret, rec = await manager.record_for(actor, owner, name)
    return (_connection(manager, actor, secret, rec, reveal=reveal, is_user=is_user),
            _notebook(manager, rec))


def _connection(manager: InstanceManager, actor: Actor, secret: dict[str, Any],
                rec: InstanceRecord, *, reveal: bool, is_user: bool) -> dict[str, Any]:
    if not reveal:
        return describe_connection(manager, rec)
    if actor.name != rec.owner or not is_user:
        raise LauncherError(403, f"only {rec.owner} sees the password of instance {rec.name!r}")
    return describe_connection(manager, rec, secret)


def _notebook(manager: InstanceManager, rec: InstanceRecord) -> dict[str, Any]:
    """Whether the instance's details are in the owner's notebook and how ("as": "env",
    "file" or None), the variables' names, the files' paths, and the URL a notebook
    connects with (without the password)."""
    from .notebookenv import (  # it builds on this module
        ENV_SECRET,
        FILES_DIR,
        FILES_SECRET,
        env_names,
        file_names,
        mode_of,
    )

    return {"enabled": mode_of(rec) is not None, "as": mode_of(rec), "secret": ENV_SECRET,
            "variables": env_names(manager, rec), "files_secret": FILES_SECRET,
            "files": [f"{FILES_DIR}/{f}" for f in file_names(rec.name)],
            "url": connection_url(manager, rec, describe_connection(manager, rec))}
