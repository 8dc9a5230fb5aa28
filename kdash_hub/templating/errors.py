"""Errors of the template engine: each says where (file and line) and what went wrong."""

from __future__ import annotations


class TemplateError(Exception):
    """A template that can't be loaded: `source:line: message`."""

    def __init__(self, message: str, source: str = "<template>", line: int | None = None):
        self.message = message
        self.source = source
        self.line = line
        where = f"{source}:{line}" if line else source
        super().__init__(f"{where}: {message}")


class RenderError(ValueError):
    """Values that can't be rendered into a template (a bad request, not a bad template)."""

    def __init__(self, messages: list[str] | str):
        self.messages = [messages] if isinstance(messages, str) else list(messages)
        super().__init__("; ".join(self.messages))
