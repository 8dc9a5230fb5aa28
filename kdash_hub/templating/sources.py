"""Where templates come from: directories of files and ConfigMaps.

A broken template is reported (file and line) and skipped; the others still load.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from .errors import TemplateError
from .model import Template
from .parse import DEFAULT_ALLOWED_KINDS, parse_template

TEMPLATE_SUFFIXES = (".yaml", ".yml")


@dataclass
class Catalog:
    """The loaded templates by id, and the errors of the ones that didn't load."""

    templates: dict[str, Template] = field(default_factory=dict)
    errors: list[TemplateError] = field(default_factory=list)

    skip_ingress: bool = True

    def add_text(self, text: str, source: str,
                 allowed_kinds: Iterable[str] = DEFAULT_ALLOWED_KINDS) -> Template | None:
        try:
            template = parse_template(text, source, allowed_kinds,
                                      skip_ingress=self.skip_ingress)
        except TemplateError as e:
            self.errors.append(e)
            return None
        if template.id in self.templates:
            other = self.templates[template.id].source
            self.errors.append(TemplateError(
                f"template id {template.id!r} is already used by {other}", source, 1))
            return None
        self.templates[template.id] = template
        return template

    def get(self, template_id: str) -> Template | None:
        return self.templates.get(template_id)

    def sorted(self) -> list[Template]:
        return sorted(self.templates.values(), key=lambda t: (t.category, t.name.lower()))


def template_files(directory: Path) -> list[Path]:
    return sorted(p for p in Path(directory).iterdir()
                  if p.is_file() and p.suffix in TEMPLATE_SUFFIXES)


def load_directories(directories: Iterable[str | Path], catalog: Catalog | None = None,
                     allowed_kinds: Iterable[str] = DEFAULT_ALLOWED_KINDS) -> Catalog:
    """Add every *.yaml / *.yml template of `directories` to `catalog`."""
    catalog = catalog or Catalog()
    allowed_kinds = tuple(allowed_kinds)
    for directory in directories:
        path = Path(directory)
        if not path.is_dir():
            catalog.errors.append(TemplateError("not a directory", str(path)))
            continue
        for file in template_files(path):
            try:
                text = file.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as e:
                catalog.errors.append(TemplateError(f"can't read: {e}", str(file)))
                continue
            catalog.add_text(text, str(file), allowed_kinds)
    return catalog


def load_configmaps(configmaps: Iterable[dict], catalog: Catalog | None = None,
                    allowed_kinds: Iterable[str] = DEFAULT_ALLOWED_KINDS) -> Catalog:
    """Add the templates held in ConfigMaps (each *.yaml data key is one template file)."""
    catalog = catalog or Catalog()
    allowed_kinds = tuple(allowed_kinds)
    for cm in configmaps:
        meta = cm.get("metadata") or {}
        where = f"configmap/{meta.get('namespace', '')}/{meta.get('name', '')}"
        for key, text in sorted((cm.get("data") or {}).items()):
            if key.endswith(TEMPLATE_SUFFIXES):
                catalog.add_text(text, f"{where}/{key}", allowed_kinds)
    return catalog
