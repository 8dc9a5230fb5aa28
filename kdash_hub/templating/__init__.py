"""The template engine for side services.

Karvdash-compatible templates, rendered inside parsed YAML, never in text.
"""

from .errors import RenderError, TemplateError
from .model import Connection, Manifest, Template, Variable
from .parse import AUTOMATIC_VARIABLES, DEFAULT_ALLOWED_KINDS, parse_template
from .render import instance_labels, render_objects
from .sources import Catalog, load_configmaps, load_directories
from .values import ResolvedValues, resolve_values

__all__ = [
    "AUTOMATIC_VARIABLES", "Catalog", "Connection", "DEFAULT_ALLOWED_KINDS", "Manifest",
    "RenderError", "ResolvedValues", "Template", "TemplateError", "Variable", "instance_labels",
    "load_configmaps", "load_directories", "parse_template", "render_objects",
    "resolve_values",
]
