"""Interfaces a flavor offers (JupyterLab, VS Code, RStudio): the user picks the one the server
opens on; the others stay one click away in JupyterLab's launcher.

A flavor lists them, the first being the default::

    "interfaces": ["lab", "vscode"]
    "interfaces": ["rstudio", "lab", {"name": "vscode", "command": ["/opt/cs/bin/code-server",
                   "--auth", "none", "--bind-addr", "127.0.0.1:{port}"]}]

How it works, on public APIs only: the chooser shows an "Interface" option whose choices set
KubeSpawner's `default_url` through their `kubespawner_override` (`/lab`, `/vscode/`,
`/rstudio/`; JupyterHub hands it to the server as JUPYTERHUB_DEFAULT_URL), and the flavor's
servers get a `--ServerProxy.servers=<dict>` argument: jupyter-server-proxy (in the image)
starts code-server / rserver on first use at `<server>/vscode/`, `<server>/rstudio/`, behind
the server's own hub authentication, and lists them in JupyterLab's launcher. An interface
the flavor doesn't offer is refused (400) by the spawner's check of the profile's choices
before anything is made.

code-server runs with `--auth none` on 127.0.0.1 inside the pod: only the notebook server,
which checks the hub login, can reach it. RStudio needs `rserver` in the image (rocker images
have it); nothing here installs it.
"""

from __future__ import annotations

import ast
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

OPTION = "interface"  # the user_options key (KubeSpawner's profile option name)
PROXY_ARG = "--ServerProxy.servers="


@dataclass(frozen=True)
class Interface:
    name: str
    display_name: str
    default_url: str
    command: tuple[str, ...] | None = None  # None: served by the notebook server itself
    timeout: int = 60  # seconds jupyter-server-proxy waits for the program's port


KNOWN: dict[str, Interface] = {
    "lab": Interface("lab", "JupyterLab", "/lab"),
    "vscode": Interface(
        "vscode", "VS Code", "/vscode/",
        ("code-server", "--auth", "none", "--bind-addr", "127.0.0.1:{port}",
         "--disable-telemetry", "--disable-update-check")),
    # rserver as the pod's own user (it refuses another), mounted under the proxy's path
    "rstudio": Interface(
        "rstudio", "RStudio", "/rstudio/",
        ("sh", "-c", 'exec rserver --www-port="$1" --www-address=127.0.0.1 --auth-none=1 '
                     '--www-frame-origin=same --www-verify-user-agent=0 --server-daemonize=0 '
                     '--www-root-path="$2" --server-user="`id -un`"',
         "rserver", "{port}", "{base_url}rstudio/")),
}


class InterfaceError(ValueError):
    """A flavor's `interfaces` setting can't be used; the message names the flavor."""


def _where(flavor: Mapping[str, Any]) -> str:
    return f"flavor {flavor.get('slug') or flavor.get('display_name')}: interfaces"


def of(flavor: Mapping[str, Any]) -> list[Interface]:
    """The flavor's interfaces in order (empty: the flavor doesn't set any), or
    InterfaceError for a setting that can't be used (checked at hub start)."""
    setting = flavor.get("interfaces")
    if setting is None or setting == []:
        return []
    where = _where(flavor)
    if not isinstance(setting, list):
        raise InterfaceError(f"{where} must be a list like [lab, vscode]")
    found: list[Interface] = []
    for entry in setting:
        name, command = entry, None
        if isinstance(entry, Mapping):
            name, command = entry.get("name"), entry.get("command")
            extra = set(entry) - {"name", "command"}
            if extra:
                raise InterfaceError(f"{where}: unknown key(s) {', '.join(sorted(map(str, extra)))}"
                                     " (an entry is a name or {name, command})")
        if not isinstance(name, str) or name not in KNOWN:
            raise InterfaceError(f"{where}: unknown interface {name!r}; known interfaces are "
                                 + ", ".join(KNOWN))
        if any(i.name == name for i in found):
            raise InterfaceError(f"{where}: {name} is listed twice")
        known = KNOWN[name]
        if command is not None:
            if known.command is None:
                raise InterfaceError(f"{where}: {name} is served by the notebook server "
                                     "itself and takes no command")
            if not isinstance(command, list) or not command or not all(
                    isinstance(a, str) and a for a in command):
                raise InterfaceError(f"{where}: the command of {name} must be a non-empty "
                                     "list of strings")
            known = Interface(known.name, known.display_name, known.default_url,
                              tuple(command), known.timeout)
        found.append(known)
    return found


def proxy_servers(found: list[Interface]) -> dict[str, Any]:
    """jupyter-server-proxy's `ServerProxy.servers` for the proxied interfaces in `found`."""
    return {i.name: {"command": list(i.command), "timeout": i.timeout,
                     "launcher_entry": {"title": i.display_name, "category": "Notebook"},
                     "new_browser_tab": True}
            for i in found if i.command is not None}


def profile_option(found: list[Interface]) -> dict[str, Any]:
    """The chooser's "Interface" option (KubeSpawner profile_options form)."""
    choices = {i.name: {"display_name": i.display_name,
                        "kubespawner_override": {"default_url": i.default_url}}
               for i in found}
    choices[found[0].name]["default"] = True
    return {"display_name": "Interface", "choices": choices}


def apply(flavor: Mapping[str, Any], override: dict[str, Any],
          options: dict[str, Any]) -> None:
    """Add the flavor's interfaces to its profile: the option, the default interface's
    default_url and the proxy argument (after the flavor's own `args`)."""
    found = of(flavor)
    if not found:
        return
    options[OPTION] = profile_option(found)
    override.setdefault("default_url", found[0].default_url)
    servers = proxy_servers(found)
    if servers:
        own = [a for a in override.get("args") or [] if not str(a).startswith(PROXY_ARG)]
        # a Python literal, which traitlets reads for a dict on the command line (JSON's
        # `true` it would not)
        override["args"] = [*own, PROXY_ARG + repr(servers)]


def from_args(args: list[str]) -> dict[str, Any] | None:
    """The proxy servers a server was started with (tests, the docs' examples)."""
    for a in args:
        if a.startswith(PROXY_ARG):
            return ast.literal_eval(a[len(PROXY_ARG):])
    return None


def check(flavor: Mapping[str, Any], user_options: Mapping[str, Any]) -> None:
    """Refuse (400) an interface sent for a flavor that offers none (KubeSpawner would ignore
    it; an offered flavor's choices are checked with the other profile options)."""
    from .refusals import _name, refusal  # refusals -> profiles -> this module

    value = user_options.get(OPTION)
    if value in (None, "") or of(flavor):
        return
    raise refusal(400, f"{_name(flavor)} offers no choice of interface; start it without "
                       "one.")
