"""Apply the pack's `custom.kdash` Helm values to the hub's traitlets configuration.

The zero-to-jupyterhub chart passes `custom:` to the hub untouched; `hub.extraConfig` in
helm-values/values.yaml calls `apply_custom_config(c, get_config("custom.kdash", {}))`.
Each section (`spawner`, `authenticator`, `launcher`, `culler`) names the settings of one
part by their traitlets names. A misspelt setting stops the hub with its full path and the
valid names, instead of being silently ignored as traitlets would do.

Secret settings may name where the secret is (`env:NAME`, `file:PATH`, kdash_hub/secrets.py)
instead of holding it; the references are resolved here, in the process that applies them.

With the launcher and the culler as Deployments of their own (helm-values/services/), the
same `custom.kdash` reaches them through a ConfigMap:

    python -m kdash_hub.z2jh custom -f helm-values/values.yaml -f my-site.yaml > custom.yaml
    python -m kdash_hub.z2jh serve kdash-launcher --custom custom.yaml [-- --port=10101]
"""

from __future__ import annotations

import argparse
import copy
import difflib
import importlib
import json
import logging
import os
import sys
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from traitlets import HasTraits, TraitError, TraitType
from traitlets.config import Config, Configurable

from .secrets import SecretReferenceError, inline_secrets, resolve_secrets

ROOT = "custom.kdash"
log = logging.getLogger("kdash_hub.z2jh")


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
# the module each service runs as (`python -m ...`)
SERVICE_MODULES = {"kdash-launcher": "kdash_hub.services.launcher",
                   "kdash-culler": "kdash_hub.services.culler"}


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


def resolved_custom(custom: Mapping[str, Any] | None,
                    environ: Mapping[str, str] | None = None) -> Any:
    """`custom.kdash` with its secret references resolved (an unresolvable one stops the
    hub with the setting's path); a secret written inline is logged as a warning."""
    for path in inline_secrets(custom or {}, ROOT):
        log.warning("%s holds a secret inline; name a Kubernetes Secret instead "
                    "(env:NAME or file:PATH, see docs/admin-guide.md)", path)
    try:
        return resolve_secrets(custom or {}, ROOT, environ)
    except SecretReferenceError as e:
        raise CustomConfigError([str(e)]) from None


def link_culler_to_flavors(sections: dict[str, Config]) -> None:
    """Let the culler know the spawner's flavors, unless the culler section says otherwise.

    A flavor's `idle_timeout` (seconds) becomes the culler's rule for that profile, and the
    flavor slugs its `known_profiles` (so a rule naming a profile that doesn't exist stops
    the culler at start). The spawner gets the culler's rules as `culler_rules`, so the
    chooser shows the idle timeout each flavor will have.
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
    spawner = sections["spawner"]["KDashSpawner"]
    if "culler_rules" not in spawner:  # the chooser shows the idle timeouts the culler applies
        spawner["culler_rules"] = {key: copy.deepcopy(culler[key]) for key in
                                   ("default_rule", "profile_rules", "group_rules")
                                   if key in culler}


def link_launcher_to_datasets(sections: dict[str, Config]) -> None:
    """Let the launcher know the spawner's S3 datasets (names, buckets, endpoints, groups and
    the Secret names of their keys, never the keys), unless the launcher section says
    otherwise: its Datasets page lists what a user gets and checks the names a user adds."""
    spawner = sections.get("spawner", Config()).get("KDashSpawner", {})
    if "launcher" not in sections or not spawner:
        return
    from kdash_hub.services.launcher.userdatasets import launcher_settings_from_spawner

    launcher = sections["launcher"]["LauncherSettings"]
    for key, value in launcher_settings_from_spawner(dict(spawner)).items():
        if key not in launcher:
            launcher[key] = copy.deepcopy(value)


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
IN_CLUSTER_ENV = ("KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT",
                  # the launcher's record signing key, which the culler reads from there
                  "KDASH_RECORD_SIGNING_KEY", "KDASH_RECORD_SIGNING_KEY_FILE")


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

    Hub-side sections (spawner, authenticator) are merged into `c`. A service the hub runs
    itself (one with a `command`: the services in the hub pod) gets its section written to
    `<service_config_dir>/<service>-config.json` and handed to its process with
    `--config=<file>` (the services are traitlets applications), with the in-cluster API
    address (KUBERNETES_SERVICE_HOST/PORT) and the record signing key, which JupyterHub does
    not pass to managed services by itself. An external service (its own Deployment) reads
    its section itself (`serve`); its secret references are not resolved here, where its
    secrets are not. Every section is also merged into `c`, so the hub's log shows one
    complete configuration.
    """
    custom = dict(custom or {})
    custom_config(custom)  # names and types first: a misspelt setting is reported as such
    for section in SECTIONS:
        if section.name in custom and (section.service is None or _runs_in_hub(c, section)):
            custom.update(resolved_custom({section.name: custom[section.name]}))
    sections = custom_config(custom)
    link_culler_to_flavors(sections)
    link_launcher_to_datasets(sections)
    drop_chart_profile_list(c, sections)
    if "spawner" in sections:  # server lifetimes, namespaces before a server: hub APIs
        from kdash_hub.spawner import lifetime_api, namespace_api

        lifetime_api.install(c)
        namespace_api.install(c)
    directory = Path(service_config_dir or os.getcwd()) / "kdash-config"
    for section in SECTIONS:
        config = sections.get(section.name)
        if config is not None:
            c.merge(config)
        if not _runs_in_hub(c, section):
            continue
        service = _service(c, section.service)
        pass_cluster_environment(service)
        if config is None:
            continue
        path = write_service_config(config, section.service, directory)
        command = [a for a in service.get("command", []) if not str(a).startswith("--config=")]
        service["command"] = [*command, f"--config={path}"]


def _runs_in_hub(c: Config, section: Section) -> bool:
    """True for a section whose service the hub runs as a process of its own pod."""
    service = _service(c, section.service) if section.service else None
    return bool(service and service.get("command"))


# --- the services as Deployments of their own -----------------------------------------------


def helm_merge(base: Any, override: Any) -> Any:
    """`override` merged over `base` as Helm merges values files (maps key by key, lists
    and scalars replace, null deletes)."""
    if not isinstance(base, dict) or not isinstance(override, dict):
        return copy.deepcopy(override)
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = helm_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def merged_custom(values_files: Iterable[Path]) -> dict:
    """`custom.kdash` of Helm values files merged in order."""
    import yaml

    values: dict = {}
    for path in values_files:
        values = helm_merge(values, yaml.safe_load(Path(path).read_text()) or {})
    return ((values.get("custom") or {}).get("kdash")) or {}


def service_config(custom: Mapping[str, Any], service: str,
                   environ: Mapping[str, str] | None = None) -> Config:
    """The traitlets config of one service from `custom.kdash`, its own references
    resolved (the others' secrets are not in its pod), the culler told the spawner's
    flavors as in the hub pod."""
    custom_config(custom)  # every section's names and types, as the hub checks them
    section = next(s for s in SECTIONS if s.service == service)
    own = resolved_custom({section.name: custom.get(section.name) or {}}, environ)
    sections = custom_config({**custom, **own})
    link_culler_to_flavors(sections)
    link_launcher_to_datasets(sections)
    return sections.get(section.name, Config())


def service_argv(service: str, config_path: Path, extra: list[str]) -> list[str]:
    return [sys.executable, "-m", SERVICE_MODULES[service], f"--config={config_path}", *extra]


def serve(service: str, custom_file: Path, extra: list[str],
          config_dir: Path | None = None) -> None:
    """Run `service` with its section of the `custom.kdash` file (never returns)."""
    import yaml

    custom = yaml.safe_load(Path(custom_file).read_text()) or {}
    if "custom" in custom:  # a whole values file was given
        custom = (custom.get("custom") or {}).get("kdash") or {}
    config = service_config(custom, service)
    directory = Path(config_dir or tempfile.mkdtemp(prefix="kdash-config-"))
    path = write_service_config(config, service, directory)
    argv = service_argv(service, path, extra)
    os.execv(argv[0], argv)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kdash_hub.z2jh", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    show = sub.add_parser("custom", help="print custom.kdash of Helm values files, merged")
    show.add_argument("-f", "--values", type=Path, action="append", required=True)
    show.add_argument("--allow-inline-secrets", action="store_true",
                      help="print even when a secret setting holds the secret itself")
    run = sub.add_parser("serve", help="run a service with its section of custom.kdash "
                                       "(arguments after -- go to the service)")
    run.add_argument("service", choices=sorted(SERVICE_MODULES))
    run.add_argument("--custom", type=Path, required=True,
                     help="a YAML file holding custom.kdash (or whole Helm values)")
    run.add_argument("--config-dir", type=Path, default=None,
                     help="where to write the service's config file (default: a new "
                          "private temporary directory)")
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    args = parser.parse_args(argv[:argv.index("--")] if "--" in argv else argv)
    try:
        if args.command == "custom":
            import yaml

            custom = merged_custom(args.values)
            custom_config(custom)  # names and types checked before anything is written
            inline = inline_secrets(custom, ROOT)
            if inline and not args.allow_inline_secrets:
                print("refusing to print secrets held inline (they would end up in a "
                      "ConfigMap): " + ", ".join(inline) + "; use env:NAME or file:PATH",
                      file=sys.stderr)
                return 2
            sys.stdout.write(yaml.safe_dump(custom, sort_keys=False))
            return 0
        serve(args.service, args.custom, extra, args.config_dir)
    except CustomConfigError as e:
        print(e, file=sys.stderr)
        return 2
    return 0  # pragma: no cover - serve() does not return


if __name__ == "__main__":
    sys.exit(main())
