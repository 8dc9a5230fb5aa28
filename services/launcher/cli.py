"""`kdash-hub templates validate|render` (for admins) and `kdash-hub services ...` (a client
of the REST API with the user's JUPYTERHUB_API_TOKEN)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import yaml

SERVICE_ACTIONS = ("list", "launch", "stop", "start", "delete", "extend", "show", "templates")


def _pairs(items: list[str]) -> dict[str, str]:
    values = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"--set needs KEY=VALUE, got {item!r}")
        values[key] = value
    return values


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    templates = subparsers.add_parser("templates", help="check and render launcher templates")
    tsub = templates.add_subparsers(dest="templates_command", required=True)
    validate = tsub.add_parser("validate", help="load every template of DIRs; exit 1 on errors")
    validate.add_argument("dirs", nargs="+", metavar="DIR")
    validate.add_argument("--allow-kind", action="append", default=[],
                          help="also allow this kind (repeatable)")
    validate.set_defaults(func=cmd_validate)
    render = tsub.add_parser("render", help="print the objects a template makes for a user")
    render.add_argument("file", metavar="FILE")
    render.add_argument("--user", required=True, help="the hub user to render for")
    render.add_argument("--name", help="instance name (default: the template id)")
    render.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    render.add_argument("--namespace-prefix", default="kdash-")
    render.add_argument("--allow-kind", action="append", default=[])
    render.set_defaults(func=cmd_render)

    services = subparsers.add_parser("services", help="your side services (launcher client)")
    services.add_argument("--url", help="launcher URL (default: $KDASH_LAUNCHER_URL or the"
                                        " hub's /services/kdash-launcher/)")
    services.add_argument("--token", help="hub API token (default: $JUPYTERHUB_API_TOKEN)")
    services.add_argument("--json", action="store_true", help="print JSON")
    ssub = services.add_subparsers(dest="services_command", required=True)
    lst = ssub.add_parser("list", help="your instances (admins: --all)")
    lst.add_argument("--all", action="store_true")
    ssub.add_parser("templates", help="the templates you can launch")
    launch = ssub.add_parser("launch", help="launch an instance of TEMPLATE")
    launch.add_argument("template")
    launch.add_argument("--name")
    launch.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    launch.add_argument("--ttl")
    for action in ("show", "stop", "start", "delete", "extend"):
        p = ssub.add_parser(action, help=f"{action} an instance")
        p.add_argument("name")
        p.add_argument("--user", help="owner (admins)")
        if action == "extend":
            p.add_argument("--by", required=True, help="e.g. 2h")
    ssub.add_parser("kubeconfig", help="print a kubeconfig for your own namespace (a"
                                       " short-lived token): `... kubeconfig > file`")
    services.set_defaults(func=cmd_services)


def _catalog_for(paths: list[str], extra_kinds: list[str]):
    from kdash_hub.templating import DEFAULT_ALLOWED_KINDS, load_directories

    return load_directories(paths, allowed_kinds=[*DEFAULT_ALLOWED_KINDS, *extra_kinds])


def cmd_validate(args: argparse.Namespace) -> int:
    catalog = _catalog_for(args.dirs, args.allow_kind)
    for template in catalog.sorted():
        print(f"ok      {template.id:<20} {template.source}")
    for error in catalog.errors:
        print(f"error   {error}", file=sys.stderr)
    return 1 if catalog.errors else 0


def cmd_render(args: argparse.Namespace) -> int:
    from pathlib import Path

    from kdash_hub.templating import (
        DEFAULT_ALLOWED_KINDS,
        Catalog,
        RenderError,
        TemplateError,
        parse_template,
    )

    from .instances import InstanceManager
    from .settings import LauncherSettings

    kinds = [*DEFAULT_ALLOWED_KINDS, *args.allow_kind]
    try:
        template = parse_template(Path(args.file).read_text(), args.file, kinds)
    except (OSError, TemplateError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    settings = LauncherSettings(namespace_prefix=args.namespace_prefix, allowed_kinds=kinds)
    manager = InstanceManager(None, settings, Catalog({template.id: template}))
    try:
        objects, _ = manager.render(template, args.user, args.name or template.id,
                                    _pairs(args.set))
    except RenderError as e:
        for message in e.messages:
            print(f"error: {message}", file=sys.stderr)
        return 1
    print(yaml.safe_dump_all(objects, sort_keys=False), end="")
    return 0


def _print_instances(instances: list[dict[str, Any]]) -> None:
    print(f"{'USER':<14} {'NAME':<22} {'TEMPLATE':<12} {'STATUS':<8} {'AGE':<7} "
          f"{'TTL LEFT':<8} REASON")
    for i in instances:
        print(f"{i['owner']:<14} {i['name']:<22} {i['template']:<12} {i['status']:<8} "
              f"{i['age']:<7} {i['ttl_left']:<8} {i['reason']}")


def cmd_services(args: argparse.Namespace) -> int:
    from .client import LauncherClient, LauncherClientError

    client = LauncherClient(url=args.url, token=args.token)
    command = args.services_command
    try:
        if command == "kubeconfig":
            sys.stdout.write(client.kubeconfig())
            return 0
        if command == "list":
            result: Any = client.list(everyone=args.all)
        elif command == "templates":
            result = client.templates()
        elif command == "launch":
            result = client.launch(args.template, name=args.name, values=_pairs(args.set),
                                   ttl=args.ttl)
        elif command == "show":
            result = client.get(args.name, args.user)
        elif command == "extend":
            result = client.extend(args.name, args.by, args.user)
        elif command == "delete":
            client.delete(args.name, args.user)
            result = {"deleted": args.name}
        else:
            result = getattr(client, command)(args.name, args.user)
    except LauncherClientError as e:
        print(f"error: {e.message} ({e.status})", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"error: can't reach the launcher at {client.url}: {e}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(result, indent=2))
    elif command == "list":
        _print_instances(result)
    elif command == "templates":
        for t in result:
            print(f"{t['id']:<16} {t['name']:<16} {t['description']}")
    elif command == "delete":
        print(f"deleted {args.name}")
    else:
        print(f"{result['name']}: {result['status']} {result.get('reason') or ''}".rstrip())
        if result.get("message"):  # extend: how far it went ("extended to the cap: ...")
            print(result["message"])
        if result.get("url"):
            print(f"url: {result['url']}")
    return 0
