"""Kubernetes names for users and their things, made in one place.

Every name is a DNS-1123 label (lowercase alphanumerics and '-', at most 63 characters,
alphanumeric at both ends). A name that had to be changed to fit (escaped, lowercased or
shortened) gets a stable hash suffix of the original, so two distinct users never share a
name, and the same user always gets the same one.
"""

from __future__ import annotations

import hashlib
import re

MAX_NAME = 63
HASH_LEN = 10
_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_NOT_SAFE = re.compile(r"[^a-z0-9]+")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_LABEL_NOT_SAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def stable_hash(text: str, length: int = HASH_LEN) -> str:
    """A short, stable, lowercase hex digest of `text`."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:length]


def is_dns1123_label(name: str) -> bool:
    """True for a valid DNS-1123 label (the rule for namespaces, services, most names)."""
    return len(name) <= MAX_NAME and bool(_DNS1123_LABEL.match(name))


def dns_label(*parts: str, max_length: int = MAX_NAME) -> str:
    """Join `parts` with '-' into a DNS-1123 label that is unique for distinct inputs.

    The joined text is used as it is when it already is a valid label that fits; otherwise
    it is slugged (lowercased, runs of other characters become '-'), cut, and suffixed with
    a hash of the original text.
    """
    raw = "-".join(parts)
    if len(raw) <= max_length and _DNS1123_LABEL.match(raw):
        return raw
    digest = stable_hash(raw)
    slug = _NOT_SAFE.sub("-", raw.lower()).strip("-")
    room = max_length - len(digest) - 1
    slug = slug[:room].rstrip("-")
    return f"{slug}-{digest}" if slug else f"x-{digest}"[:max_length]


def user_namespace(username: str, prefix: str = "kdash-") -> str:
    """The namespace of a hub user: `{prefix}{username}` as a DNS-1123 label."""
    return dns_label(f"{prefix}{username}")


def user_object_name(kind_prefix: str, username: str, suffix: str = "") -> str:
    """A per-user object name such as `jupyter-alice` or `home-alice`, unique per user."""
    parts = [kind_prefix, username] + ([suffix] if suffix else [])
    return dns_label(*parts)


def label_value(text: str) -> str:
    """A valid label value (<= 63 chars of [-A-Za-z0-9_.], alphanumeric ends) for `text`.

    Values that are already valid are kept; others are slugged and suffixed with a hash, so
    distinct texts stay distinct. Keep the raw text in an annotation when it is needed back.
    """
    if len(text) <= MAX_NAME and _LABEL_VALUE.match(text):
        return text
    digest = stable_hash(text)
    slug = _LABEL_NOT_SAFE.sub("-", text)
    slug = slug[: MAX_NAME - len(digest) - 1]
    slug = re.sub(r"^[^A-Za-z0-9]+|[^A-Za-z0-9]+$", "", slug)
    return f"{slug}-{digest}" if slug else digest
