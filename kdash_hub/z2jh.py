"""Apply the pack's `custom.kdash` Helm values to the hub's traitlets configuration.

The zero-to-jupyterhub chart passes `custom:` to the hub untouched; `hub.extraConfig` in
helm-values/values.yaml calls `apply_custom_config(c, get_config("custom.kdash", {}))`.
Each section (`spawner`, `authenticator`, `launcher`, `culler`) names the settings of one
part by their traitlets names. A misspelt setting stops the hub with its full path and the
valid names, instead of being silently ignored as traitlets would do.
"""

from __future__ import annotations

import difflib
import importlib
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from traitlets import HasTraits, TraitError, TraitType
from traitlets.config import Config, Configurable

ROOT = "custom.kdash"


@dataclass(frozen=True)
class Section:
    """One `custom.kdash.<name>` section and the configurable classes it sets."""

    name: str
    # "module:Class" import paths; a key goes to the first class that has it
    classes: tuple[str, ...]
    # the hub-managed service whose process reads this section (None: the hub itself)
    service: str | None = None


SECTIONS: tuple[Section, ...] = (
    Section("spawner", ("kdash_hub.spawner:KDashSpawner",)),
    Section(
        "authenticator",
        ("kdash_hub.authenticator:KDashAuthenticator",
         "kdash_hub.authenticator:LDAPBackend"),
    ),
    Section(
        "launcher",
        ("kdash_hub.services.launcher.settings:LauncherSettings",
         "kdash_hub.services.launcher.app:LauncherApp"),
        service="kdash-launcher",
    ),
    Section("culler", ("kdash_hub.services.culler.app:CullerApp",), service="kdash-culler"),
)


class CustomConfigError(ValueError):
    """`custom.kdash` has settings that no class of the pack knows, or values of a wrong type."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__(
            f"{len(problems)} problem(s) in {ROOT}:\n" + "\n".join(f"  - {p}" for p in problems)
        )


def import_class(path: str) -> type[Configurable]:
    """The class named by "module:Class"."""
    module_name, _, class_name = path.partition(":")
    return getattr(importlib.import_module(module_name), class_name)


def section_classes(section: Section) -> list[type[Configurable]]:
    """The configurable classes of a section, in the order keys are looked up."""
    return [import_class(path) for path in section.classes]


def configurable_traits(classes: Iterable[type[Configurable]]) -> dict[str, tuple[type, Any]]:
    """trait name -> (class that takes it, trait), first class wins."""
    found: dict[str, tuple[type, Any]] = {}
    for cls in classes:
        for name, trait in sorted(cls.class_traits(config=True).items()):
            found.setdefault(name, (cls, trait))
    return found


def _type_problem(trait: TraitType, value: Any) -> str | None:
    """Why `value` does not fit `trait`, or None (best effort: some traits need their owner)."""
    try:
        trait.validate(HasTraits(), value)
    except TraitError as exc:
        return str(exc).splitlines()[0]
    except (TypeError, ValueError) as exc:
        return f"{type(value).__name__} value {value!r} does not fit: {exc}"
    except Exception:  # noqa: BLE001 - a validator that needs its real owner: can't check here
        return None
    return None


def _unknown(path: str, key: str, valid: Iterable[str]) -> str:
    valid = sorted(valid)
    close = difflib.get_close_matches(key, valid, n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    return f"{path}.{key}: unknown setting.{hint} Valid settings: {', '.join(valid)}"


def custom_config(custom: Mapping[str, Any] | None) -> dict[str, Config]:
    """Check `custom.kdash` and turn it into traitlets config, one Config per section.

    Raises CustomConfigError listing every unknown key (with its path and the valid keys)
    and every value of a wrong type. A null value means "not set" (Helm deletes it).
    """
    custom = custom or {}
    problems: list[str] = []
    by_name = {s.name: s for s in SECTIONS}
    if not isinstance(custom, Mapping):
        raise CustomConfigError([f"{ROOT}: must be a mapping of sections, got {custom!r}"])
    result: dict[str, Config] = {}
    for section_name, settings in custom.items():
        section = by_name.get(section_name)
        if section is None:
            problems.append(_unknown(ROOT, section_name, by_name))
            continue
        path = f"{ROOT}.{section_name}"
        if settings is None:
            continue
        if not isinstance(settings, Mapping):
            problems.append(f"{path}: must be a mapping of settings, got {settings!r}")
            continue
        traits = configurable_traits(section_classes(section))
        config = Config()
        for key, value in settings.items():
            if key not in traits:
                problems.append(_unknown(path, key, traits))
                continue
            if value is None:
                continue
            cls, trait = traits[key]
            problem = _type_problem(trait, value)
            if problem:
                problems.append(f"{path}.{key}: {problem}")
                continue
            config[cls.__name__][key] = value
        result[section_name] = config
    if problems:
        raise CustomConfigError(problems)
    return result


def link_culler_to_flavors(sections: dict[str, Config]) -> None:
    """Let the culler know the spawner's flavors, unless the culler section says otherwise.

    A flavor's `idle_timeout` (seconds) becomes the culler's rule for that profile, and the
    flavor slugs its `known_profiles` (so a rule naming a profile that doesn't exist stops
    the culler at start).
    """
    flavors = sections.get("spawner", Config()).get("KDashSpawner", {}).get("flavors")
    if not flavors or "culler" not in sections:
        return
    from kdash_hub.spawner.profiles import flavor_slug

    culler = sections["culler"]["CullerApp"]
    slugs = [flavor_slug(f) for f in flavors]
    if "known_profiles" not in culler:
        culler["known_profiles"] = slugs
    rules = dict(culler.get("profile_rules", {}))
    for flavor, slug in zip(flavors, slugs, strict=True):
        if flavor.get("idle_timeout") and slug not in rules:
            rules[slug] = {"idle": int(flavor["idle_timeout"])}
    if rules:
        culler["profile_rules"] = rules


def drop_chart_profile_list(c: Config, sections: dict[str, Config]) -> None:
    """Let the spawner's flavors make the profile list.

    The chart always sets `c.KubeSpawner.profile_list` from `singleuser.profileList` (an
    empty list by default), which would hide KDashSpawner's own list made from `flavors`.
    An explicit, non-empty `singleuser.profileList` is kept (and wins, as configured).
    """
    flavors = sections.get("spawner", Config()).get("KDashSpawner", {}).get("flavors")
    if flavors and "KubeSpawner" in c and c.KubeSpawner.get("profile_list", None) == []:
        del c.KubeSpawner["profile_list"]


# what kubernetes_asyncio's in-cluster config reads; JupyterHub gives managed services only
# the variables in Spawner.env_keep, so the hub passes these on to its services
IN_CLUSTER_ENV = ("KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT")


def pass_cluster_environment(service: dict) -> None:
    """Give a service running in the hub pod what it needs to reach the Kubernetes API."""
    environment = service.setdefault("environment", {})
    for key in IN_CLUSTER_ENV:
        if key in os.environ:
            environment.setdefault(key, os.environ[key])


def _service(c: Config, name: str) -> dict | None:
    for service in c.JupyterHub.get("services", []) or []:
        if service.get("name") == name:
            return service
    return None


def write_service_config(config: Config, name: str, directory: Path) -> Path:
    """Write a service's section as a traitlets JSON config file its process loads."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}-config.json"
    path.write_text(json.dumps(config, indent=2, sort_keys=True, default=str))
    path.chmod(0o600)  # may hold credentials; the services run as the hub's user
    return path


def apply_custom_config(
    c: Config, custom: Mapping[str, Any] | None, *, service_config_dir: Path | None = None
) -> None:
    """Apply `custom.kdash` to the hub config `c` (call it from `hub.extraConfig`).

    Hub-side sections (spawner, authenticator) are merged into `c`. A service's section is
    written to `<service_config_dir>/<service>-config.json` and handed to the service's
    process with `--config=<file>` (the services are traitlets applications); it is also
    merged into `c` so the hub's log shows one complete configuration. The pack's
    services also get the in-cluster API address (KUBERNETES_SERVICE_HOST/PORT), which
    JupyterHub does not pass to managed services by itself.
    """
    sections = custom_config(custom)
    link_culler_to_flavors(sections)
    drop_chart_profile_list(c, sections)
    directory = Path(service_config_dir or os.getcwd()) / "kdash-config"
    for section in SECTIONS:
        config = sections.get(section.name)
        if config is not None:
            c.merge(config)
        service = _service(c, section.service) if section.service else None
        if service is None:
            continue
        pass_cluster_environment(service)
        if config is None:
            continue
        path = write_service_config(config, section.service, directory)
        command = [a for a in service.get("command", []) if not str(a).startswith("--config=")]
        service["command"] = [*command, f"--config={path}"]
