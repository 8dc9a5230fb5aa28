"""Public URLs of instances: one Ingress per instance at `<label>.<public_domain>`.

A template opts in on the Service it publishes (`kdash-hub.io/public: <port>`); the admin
allows it with `LauncherSettings.public_domain`. The Ingress is rendered with the
template's objects, so it is one of the objects the signed record lists: the launch makes
it, stop leaves it, delete and expiry remove it, the reconciler makes it again.

The host label is `naming.joined("", instance, owner)`: `<instance>--<owner>` when both are
kept names, else `<slug>---<hash of [instance, owner]>` (injective, see naming.py), so
`a-b` + `c` (`a-b--c`) and `a` + `b-c` (`a--b-c`) never meet, and no user can name an
instance so that its host is someone else's. The only label refused is one that would
start with `xn--` (a punycode label browsers decode): the instance `xn`.

`instance_for_host` goes the other way for the forward-auth endpoint; it only *finds* a
record: the endpoint then verifies that record and recomputes its host from the signed
owner and name, so nothing a user writes (labels, annotations, their own objects) decides
who gets through.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from kubernetes_asyncio.client.exceptions import ApiException

from kdash_hub import labels as L
from kdash_hub import naming
from kdash_hub.kube import KubeResources
from kdash_hub.templating import RenderError, Template
from kdash_hub.templating.render import instance_labels

from .records import DELETING, InstanceRecord, is_instance_name
from .settings import LauncherSettings

PUBLIC_ANNOTATION = "kdash-hub.io/public"
INGRESS_PREFIX = "kdash-public-"
AUTH_USER_HEADER = "X-Auth-User"
NGINX = "nginx.ingress.kubernetes.io/"
_HOST_CHARS = re.compile(r"^[a-z0-9.-]+$")


def host_label(instance: str, owner: str) -> str:
    """The first label of the instance's public host (raises RenderError for `xn`)."""
    label = naming.joined("", instance, owner)
    if label.startswith("xn--"):
        raise RenderError(f"instance name {instance!r} would make the public host start with"
                          " 'xn--' (a punycode name browsers rewrite); choose another name")
    return label


def public_host(settings: LauncherSettings, instance: str, owner: str) -> str:
    return f"{host_label(instance, owner)}.{settings.public_domain}"


def ingress_name(instance: str) -> str:
    return INGRESS_PREFIX + instance  # instance names are <= 40 characters


def scheme(settings: LauncherSettings) -> str:
    return "http" if settings.public_tls == "none" else "https"


def auth_url(settings: LauncherSettings) -> str:
    return settings.public_auth_url or (
        f"{settings.public_url.rstrip('/')}{settings.service_prefix}forward-auth")


def signin_url(settings: LauncherSettings) -> str:
    return f"{settings.public_url.rstrip('/')}{settings.service_prefix}public-signin"


def _published_port(service: dict) -> int | None:
    """The Service port the template publishes (by name or number), None if it doesn't."""
    wanted = ((service.get("metadata") or {}).get("annotations") or {}).get(PUBLIC_ANNOTATION)
    if wanted in (None, ""):
        return None
    for port in (service.get("spec") or {}).get("ports") or []:
        if isinstance(port, dict) and str(wanted) in (str(port.get("name")),
                                                      str(port.get("port"))):
            if isinstance(port.get("port"), int):
                return port["port"]
    raise RenderError(f"Service {service['metadata'].get('name')!r} publishes port"
                      f" {wanted!r}, which it doesn't have (tell an admin: the template is"
                      " wrong)")


def ingress_objects(settings: LauncherSettings, template: Template, username: str,
                    instance: str, objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The Ingress of a launch whose template publishes a Service (none when the admin
    set no public_domain or the template publishes nothing)."""
    if not settings.public_domain:
        return []
    for service in objects:
        if service.get("kind") != "Service":
            continue
        port = _published_port(service)
        if port is None:
            continue
        host = public_host(settings, instance, username)
        return [_ingress(settings, template, username, instance, service, port, host)]
    return []


def _ingress(settings: LauncherSettings, template: Template, username: str, instance: str,
             service: dict, port: int, host: str) -> dict[str, Any]:
    name = ingress_name(instance)
    annotations = dict(L.owner_annotations(username))
    if settings.public_forward_auth == "nginx":
        annotations |= {
            NGINX + "auth-url": auth_url(settings),
            NGINX + "auth-signin": signin_url(settings) + "?rd=$scheme://$host$escaped_request_uri",
            NGINX + "auth-response-headers": AUTH_USER_HEADER,
        }
    elif settings.public_traefik_middleware:
        annotations["traefik.ingress.kubernetes.io/router.middlewares"] = (
            settings.public_traefik_middleware)
    spec: dict[str, Any] = {"rules": [{"host": host, "http": {"paths": [{
        "path": "/", "pathType": "Prefix", "backend": {"service": {
            "name": service["metadata"]["name"], "port": {"number": port}}}}]}}]}
    if settings.public_ingress_class:
        spec["ingressClassName"] = settings.public_ingress_class
    if settings.public_tls == "cert-manager":
        if settings.public_tls_issuer:
            annotations["cert-manager.io/cluster-issuer"] = settings.public_tls_issuer
        spec["tls"] = [{"hosts": [host], "secretName": f"{name}-tls"}]
    elif settings.public_tls == "wildcard-secret":
        spec["tls"] = [{"hosts": [host], "secretName": settings.public_tls_secret}]
    return {
        "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
        "metadata": {"name": name, "namespace": service["metadata"].get("namespace"),
                     "labels": instance_labels(username, template.id, instance),
                     "annotations": annotations},
        "spec": spec,
    }


class HostTaken(ValueError):
    """A launch's public host (or its Ingress name) is held by an Ingress already there."""


def _hosts(ingress: dict[str, Any]) -> set[str]:
    rules = (ingress.get("spec") or {}).get("rules") or []
    return {str(r.get("host")).lower() for r in rules if isinstance(r, dict) and r.get("host")}


async def check_hosts_free(kube: KubeResources, namespace: str,
                           objects: list[dict[str, Any]]) -> None:
    """Before a launch makes anything: no Ingress in the user's namespace already has the
    name or a host of the launch's public Ingress (raises HostTaken with the sentence). The
    host is the instance's own, so only an Ingress someone else made there (an admin's, a
    stale one) can hold it; without the check the launch would fail half-way (same name) or
    two Ingresses would share the host (another name)."""
    ours = [o for o in objects if o.get("kind") == "Ingress"
            and o["metadata"]["name"].startswith(INGRESS_PREFIX)]
    if not ours:
        return
    try:
        existing = await kube.list("Ingress", namespace)
    except ApiException as e:
        if e.status in (403, 404):  # no namespace yet (nor the launcher's rights in it)
            return
        raise
    for mine in ours:
        name, hosts = mine["metadata"]["name"], _hosts(mine)
        for other in existing:
            other_name = other["metadata"]["name"]
            if other_name == name:
                raise HostTaken(f"An Ingress named {name} is already in your namespace, so "
                                f"this instance can't get its public URL; choose another "
                                f"instance name (or ask an admin to remove that Ingress). "
                                f"Nothing was created.")
            taken = hosts & _hosts(other)
            if taken:
                raise HostTaken(f"The public host {sorted(taken)[0]} is already taken by the "
                                f"Ingress {other_name} in your namespace; choose another "
                                f"instance name (or ask an admin to remove that Ingress). "
                                f"Nothing was created.")


def published(rec: InstanceRecord) -> bool:
    """The record lists the instance's Ingress, made (UID signed) and not being deleted."""
    return rec.phase != DELETING and bool(rec.uid_of("Ingress", ingress_name(rec.name)))


def public_url(settings: LauncherSettings, rec: InstanceRecord) -> str | None:
    """What the list and the API show: the instance's public URL, if it has one."""
    if not settings.public_domain or not any(
            o["kind"] == "Ingress" and o["name"] == ingress_name(rec.name) for o in rec.objects):
        return None
    try:
        return f"{scheme(settings)}://{public_host(settings, rec.name, rec.owner)}/"
    except RenderError:
        return None


def normal_host(text: str | None) -> str | None:
    """The host a Host header or URL names, as DNS compares it: lowercase, without port
    or trailing dot; None for anything that isn't a DNS name."""
    if not text:
        return None
    text = text.strip()
    if "://" in text:
        try:
            text = urlsplit(text).netloc
        except ValueError:
            return None
    text, _, port = text.partition(":")
    if port and not port.isdigit():
        return None  # user info (`a@b`), IP literals, two ports: never an instance's host
    text = text.lower()
    if text.endswith("."):
        text = text[:-1]
    if not text or len(text) > 253 or not _HOST_CHARS.match(text) or not all(
            naming.is_dns1123_label(label) for label in text.split(".")):
        return None
    return text


def label_of(settings: LauncherSettings, host: str) -> str | None:
    """The first label of a host directly under public_domain, else None."""
    suffix = "." + settings.public_domain
    if not settings.public_domain or not host.endswith(suffix):
        return None
    label = host[:-len(suffix)]
    return label if label and "." not in label else None


def split_label(label: str) -> tuple[str, str] | None:
    """(instance, owner) of a `<instance>--<owner>` label of kept names; None for a hashed
    label (found through the records instead)."""
    parts = label.split("--")
    if len(parts) != 2 or "---" in label:
        return None
    instance, owner = parts
    if is_instance_name(instance) and naming.is_kept(owner):
        return instance, owner
    return None
