"""What a parsed template is: its header (Karvdash fields + our extensions) and manifests."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

VARIABLE_TYPES = ("string", "integer", "boolean", "choice", "secret")
EXPIRY_ACTIONS = ("stop", "delete")


@dataclass
class Variable:
    """A template variable: Karvdash's name/default/help/label, plus our type and choices."""

    name: str
    default: Any = ""
    help: str = ""
    label: str = ""
    type: str = "string"
    choices: list[str] = field(default_factory=list)
    length: int = 24  # of a generated secret
    automatic: bool = False  # declared, but filled in by the launcher

    def as_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "name": self.name, "label": self.label or self.name, "help": self.help,
            "type": self.type,
            "default": None if self.type == "secret" else self.default,
        }
        if self.choices:
            data["choices"] = list(self.choices)
        return data


@dataclass
class Connection:
    """How a notebook connects to an instance (our extension `connection:`): the Service
    port to advertise (a name or number; default: the proxied one) and the variables that
    hold the user, the password and the database; `scheme` makes a URL of them. Values
    are read at the instance, the password only when its owner asks for it."""

    port: int | str | None = None
    user: str = ""
    password: str = ""
    database: str = ""
    scheme: str = ""  # of the URL a notebook gets (postgresql, redis, http); "" none


@dataclass
class Manifest:
    """One Kubernetes object of a template, as parsed (before substitution)."""

    obj: dict[str, Any]
    line: int

    @property
    def kind(self) -> str:
        return str(self.obj.get("kind", ""))


@dataclass
class Template:
    """A loaded template. `id` is the stable slug used in URLs, labels and the API."""

    id: str
    name: str
    description: str
    source: str
    variables: list[Variable]
    manifests: list[Manifest]
    singleton: bool = False
    datasets: bool = False
    auth: bool = False
    ttl: int | None = None  # seconds; None: no expiry
    expiry: str = "stop"
    icon: str = ""
    category: str = ""
    service_port: int | str | None = None  # the port the proxy forwards to
    proxy_strip_prefix: bool = True  # False: the app is configured with $PATH_PREFIX
    http: bool = True  # False: not a web service (no proxy URL; connect to its address)
    connection: Connection | None = None
    web_label: str = ""  # what the proxied page is ("Console"); "" for plain "Open"
    skipped: list[str] = field(default_factory=list)  # documents left out, and why

    def variable(self, name: str) -> Variable | None:
        return next((v for v in self.variables if v.name == name), None)

    @property
    def default_name(self) -> str:
        """The instance name when the user gives none: the declared NAME default (Karvdash
        templates declare one), else the template id."""
        var = self.variable("NAME")
        if var is not None and var.default not in (None, ""):
            return str(var.default)
        return self.id

    @property
    def user_variables(self) -> list[Variable]:
        """The variables a user may set (NAME is the instance name, set separately)."""
        return [v for v in self.variables if not v.automatic]

    def summary(self) -> dict[str, Any]:
        return {
            "id": self.id, "name": self.name, "description": self.description,
            "singleton": self.singleton, "ttl": self.ttl, "expiry": self.expiry,
            "icon": self.icon, "category": self.category, "http": self.http,
            "default_name": self.default_name, "web_label": self.web_label,
            "variables": [v.as_dict() for v in self.user_variables],
            "kinds": [m.kind for m in self.manifests],
        }
