"""YAML 1.1 documents with the line each one (and each key) starts on.

PyYAML's SafeLoader implements YAML 1.1 (`yes`/`no`/`on`/`off` are booleans), which is
what Karvdash templates were written for. Composing the node tree first keeps the marks,
so errors can point at a line.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml

from .errors import TemplateError


@dataclass
class Document:
    data: Any
    line: int  # 1-based line where the document starts
    key_lines: dict[str, int]  # top-level key -> 1-based line


def load_documents(text: str, source: str) -> list[Document]:
    """Parse every document of `text`; a syntax error is a TemplateError with its line."""
    loader = yaml.SafeLoader(text)
    docs: list[Document] = []
    try:
        while loader.check_node():
            node = loader.get_node()
            if node is None:
                continue
            key_lines: dict[str, int] = {}
            if isinstance(node, yaml.MappingNode):
                for key, _value in node.value:
                    if isinstance(key, yaml.ScalarNode):
                        key_lines[str(key.value)] = key.start_mark.line + 1
            data = loader.construct_document(node)
            if data is None:
                continue
            docs.append(Document(data, node.start_mark.line + 1, key_lines))
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark else None
        raise TemplateError(f"invalid YAML: {e.problem or e}", source, line) from None
    except yaml.YAMLError as e:
        raise TemplateError(f"invalid YAML: {e}", source) from None
    finally:
        loader.dispose()
    return docs
