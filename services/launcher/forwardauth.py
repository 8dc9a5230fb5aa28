"""The forward-auth endpoint of public URLs: may this browser open this public host?

Ingress controllers ask it before each request to an instance's public host (ingress-nginx
`auth-url`, Traefik ForwardAuth) and pass the browser's cookies on. The answer:

* 200 with `X-Auth-User: <owner>` only when the hub login (the launcher's own HubOAuth
  cookie, or a hub API token) is the instance's owner;
* 401 when nobody is logged in (nginx then redirects to `auth-signin`, our
  `public-signin`; for Traefik, whose answer goes to the browser as it is, a 302 there);
* 403 for anyone else, for a host under the domain that names no instance, for a record
  that doesn't verify, and when the host header is missing or malformed; one answer for
  all of them, so nobody learns which hosts exist; 404 only for a host outside the domain.

The host comes only from the header the configured controller sets itself, from the Host
it routes on (nginx: X-Original-URL; Traefik: X-Forwarded-Host); the other one, which a
browser can send through the controller, is never read, so a host of the browser's own
choosing can't stand in for the one the request goes to. Traefik passes X-Original-URL on
as the browser sent it (its ingress-nginx provider turns `auth-url` into a plain
ForwardAuth), so the nginx flavour refuses a call that carries Traefik's own headers.
The owner comes from the signed record found for the host, whose host is then recomputed
from the signed owner and name: labels, annotations and the Ingress objects themselves
are never read.
"""

from __future__ import annotations

import asyncio
import logging
import time
from urllib.parse import urlencode

from jupyterhub.services.auth import UserNotAllowed
from kubernetes_asyncio.client.exceptions import ApiException
from tornado import web

from . import lifecycle
from .handlers import LauncherHandler
from .instances import InstanceManager
from .publicurl import (
    AUTH_USER_HEADER,
    label_of,
    normal_host,
    public_host,
    published,
    signin_url,
    split_label,
)
from .records import InstanceRecord, RecordInvalid

log = logging.getLogger("kdash_hub.launcher.forwardauth")
BLOCKED_GROUPS = {"kdash-pending", "kdash-rejected"}
INDEX_SECONDS = 5.0  # the index of hashed hosts is rebuilt at most this often


class HostIndex:
    """Hashed host labels -> (namespace, instance), from the verified records; only a hint
    (the endpoint verifies the record it points to). A label it doesn't know waits for a
    rebuild newer than the request (at most one every INDEX_SECONDS, shared by all the
    requests waiting), so an instance launched a moment ago is found, and a flood of
    unknown hosts costs one listing per INDEX_SECONDS."""

    def __init__(self) -> None:
        self.hosts: dict[str, tuple[str, str]] = {}
        self.built = float("-inf")
        self.lock = asyncio.Lock()

    async def find(self, manager: InstanceManager, label: str) -> tuple[str, str] | None:
        if label in self.hosts:
            return self.hosts[label]
        asked = time.monotonic()
        async with self.lock:
            if label not in self.hosts and self.built < asked:
                await asyncio.sleep(max(0.0, self.built + INDEX_SECONDS - time.monotonic()))
                started = time.monotonic()
                records, _ = await lifecycle.list_records_checked(
                    manager.kube, signer=manager.signer)
                hosts = {}
                for rec in records:
                    if published(rec):
                        try:
                            host = public_host(manager.settings, rec.name, rec.owner)
                        except ValueError:
                            continue
                        hosts[host.split(".", 1)[0]] = (rec.namespace, rec.name)
                self.hosts, self.built = hosts, started
        return self.hosts.get(label)


# sent by Traefik's ForwardAuth on every call, never by ingress-nginx's auth sub-request
TRAEFIK_ONLY_HEADERS = frozenset({"x-forwarded-method", "x-forwarded-uri"})


class ForwardAuthHandler(LauncherHandler):
    """GET/HEAD `<prefix>forward-auth`, called by the ingress controller. A LauncherHandler
    (manager, hub_auth, security headers) that answers 401 instead of redirecting."""

    api = True

    def set_default_headers(self) -> None:
        super().set_default_headers()
        self.set_header("Cache-Control", "no-store")

    async def prepare(self) -> None:
        """No login redirect: `get` authenticates and answers the controller itself."""

    def check_xsrf_cookie(self) -> None:
        # the controller's sub-request carries the page's own Sec-Fetch-* headers (an app's
        # fetch() is `cors`); the answer changes nothing and never reaches a page's script
        return

    def _host(self) -> str | None:
        """The original host, from the header the configured controller sets itself."""
        # the other header is ignored: the browser may send it, and proxies on the way
        # (the hub's configurable-http-proxy) set X-Forwarded-Host to their own host
        headers = self.request.headers
        if self.manager.settings.public_forward_auth == "nginx":
            # Traefik's ForwardAuth (also what its ingress-nginx provider makes of an
            # `auth-url`) always sets these itself, and passes every other header on as the
            # browser sent it: X-Original-URL would then be the browser's choice
            if TRAEFIK_ONLY_HEADERS & {name.lower() for name in headers}:
                return None
            return normal_host(headers.get("X-Original-URL"))
        return normal_host(headers.get("X-Forwarded-Host"))

    def _refuse(self, status: int, why: str) -> None:
        log.info("forward-auth %d: %s", status, why)
        self.set_status(status)
        self.finish(f"{status}: {why}\n" if status == 404 else f"{status}\n")

    async def _record(self, label: str) -> InstanceRecord | None:
        """The verified record of a public host label, or None (unknown, or not verified)."""
        manager = self.manager
        found = split_label(label)
        if found is not None:
            instance, owner = found
            where = (manager.settings.user_namespace(owner), instance)
        else:
            index = self.settings.setdefault("public_host_index", HostIndex())
            where = await index.find(manager, label)
        if where is None:
            return None
        namespace, instance = where
        try:
            _, rec = await lifecycle.read_record(manager.kube, namespace, instance,
                                                 manager.signer)
        except (lifecycle.InstanceNotFound, RecordInvalid):
            return None
        except ApiException as e:
            if e.status in (403, 404):  # no such namespace, or none the launcher acts in
                return None
            raise
        if rec.namespace != manager.settings.user_namespace(rec.owner) or not published(rec):
            return None
        try:
            if public_host(manager.settings, rec.name, rec.owner).split(".", 1)[0] != label:
                return None
        except ValueError:
            return None
        return rec

    async def get(self) -> None:
        settings = self.manager.settings
        if not settings.public_domain:
            return self._refuse(404, "public URLs are off (LauncherSettings.public_domain)")
        host = self._host()
        if host is None:
            return self._refuse(403, "no original host (or not a DNS name)")
        label = label_of(settings, host)
        if label is None:
            return self._refuse(404, f"{host} is not a public host of this launcher")
        model = await self.hub_auth.get_user(self, sync=False)
        if not model:
            return self._sign_in(host)
        try:
            self.check_hub_user(model)  # the launcher's access scope, as its other handlers
        except UserNotAllowed:
            return self._refuse(403, "a token without access to the launcher")
        if model.get("kind", "user") != "user" or BLOCKED_GROUPS & set(
                model.get("groups") or []):
            return self._refuse(403, f"{model.get('name')!r} may not use public URLs")
        rec = await self._record(label)
        if rec is None or rec.owner != model.get("name"):
            return self._refuse(403, f"{model.get('name')!r} is not the owner of {host}")
        self.set_header(AUTH_USER_HEADER, rec.owner)
        self.set_status(200)
        self.finish()

    head = get

    def _sign_in(self, host: str) -> None:
        settings, headers = self.manager.settings, self.request.headers
        if settings.public_forward_auth == "nginx":
            original = headers.get("X-Original-URL", f"https://{host}/")
        else:  # Traefik's: the first proto (proxies on the way append theirs)
            proto = headers.get("X-Forwarded-Proto", "https").split(",")[0].strip()
            uri = headers.get("X-Forwarded-Uri", "/")
            original = (f"{proto if proto in ('http', 'https') else 'https'}://{host}"
                        f"{uri if uri.startswith('/') else '/'}")
        target = f"{signin_url(settings)}?{urlencode({'rd': original})}"
        self.set_header("X-Auth-Signin", target)
        if settings.public_forward_auth == "traefik":  # Traefik hands this to the browser
            self.redirect(target)
            return
        self._refuse(401, "log in to the hub")


class PublicSignInHandler(LauncherHandler):
    """`<prefix>public-signin?rd=URL`: log in to the hub (LauncherHandler redirects to it),
    then go back to a public host of this launcher, never anywhere else."""

    async def get(self) -> None:
        settings = self.manager.settings
        rd = self.get_argument("rd", "")
        host = normal_host(rd)
        if not rd.startswith(("https://", "http://")) or host is None \
                or label_of(settings, host) is None:
            raise web.HTTPError(400, "rd must be a URL of a public host of this launcher")
        self.redirect(rd)


def forwardauth_routes(prefix: str) -> list[tuple[str, type]]:
    return [
        (prefix + "forward-auth", ForwardAuthHandler),
        (prefix + "public-signin", PublicSignInHandler),
    ]
