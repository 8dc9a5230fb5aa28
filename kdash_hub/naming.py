"""Kubernetes names for users and their things, made in one place.

Every name is a DNS-1123 label (lowercase alphanumerics and '-', at most 63 characters,
alphanumeric at both ends), and distinct inputs always get distinct names, by construction:

* a text is *kept* as it is only when it already is a valid label that fits AND contains no
  `--`;
* every other text is *escaped* to `<readable slug>---<hash>`, the hash (64 bits) taken over
  the FULL original text, so shortening never merges two texts.

A kept name never contains `--` and an escaped one always contains `---`, so a kept name can
never equal an escaped one (the scheme of KubeSpawner 7's safe slugs). A user who picks a
username equal to someone else's escaped or shortened name therefore gets a name of their
own: `a.b` is `a-b---<hash>`, and the user literally called `a-b---<hash>` is escaped again.
Two escaped names are equal only if 64-bit hashes of different texts are, which nobody can
arrange on purpose. Several parts (user + server) are joined with `--` when all are kept,
and hashed as a list otherwise, so `("a-b", "c")` and `("a", "b-c")` stay apart.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata

MAX_NAME = 63
HASH_LEN = 10  # label values (label_value): unchanged, existing objects carry them
NAME_HASH_LEN = 16  # names: 64 bits, out of reach of a chosen second preimage
ESCAPE_SEP = "---"
_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_PREFIX = re.compile(r"^([a-z0-9][-a-z0-9]*)?$")
_NOT_SAFE = re.compile(r"[^a-z0-9]+")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_LABEL_NOT_SAFE = re.compile(r"[^A-Za-z0-9_.-]+")
_ESCAPED_ROOM = len(ESCAPE_SEP) + NAME_HASH_LEN + 1  # the shortest escaped name: "x---<hash>"


def stable_hash(text: str, length: int = HASH_LEN) -> str:
    """A short, stable, lowercase hex digest of `text`."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:length]


def is_dns1123_label(name: str) -> bool:
    """True for a valid DNS-1123 label (the rule for namespaces, services, most names)."""
    return len(name) <= MAX_NAME and bool(_DNS1123_LABEL.match(name))


def is_kept(text: str, max_length: int = MAX_NAME) -> bool:
    """True when `text` is used as it is: a valid label of at most `max_length`, no `--`."""
    return len(text) <= max_length and "--" not in text and bool(_DNS1123_LABEL.match(text))


def _readable(text: str) -> str:
    """Lowercase a-z0-9 runs of `text` joined by single '-' (accents and widths folded)."""
    folded = unicodedata.normalize("NFKD", unicodedata.normalize("NFKC", text))
    ascii_text = "".join(c for c in folded if not unicodedata.combining(c)).lower()
    return _NOT_SAFE.sub("-", ascii_text).strip("-")


def _escape(parts: list[str], max_length: int) -> str:
    """`<slug>---<hash of the parts>`; the hash covers the full texts, never a cut."""
    key = json.dumps(parts, ensure_ascii=True)  # one encoding per list: no boundary games
    digest = hashlib.sha256(key.encode("ascii")).hexdigest()[:NAME_HASH_LEN]
    room = max_length - len(ESCAPE_SEP) - NAME_HASH_LEN
    if room < 1:
        raise ValueError(f"no room for an escaped name in {max_length} characters")
    slug = _readable("-".join(parts))[:room].strip("-") or "x"
    return f"{slug}{ESCAPE_SEP}{digest}"


def _check_prefix(prefix: str, max_length: int) -> None:
    if not _PREFIX.match(prefix) or len(prefix) > max_length - _ESCAPED_ROOM:
        raise ValueError(
            f"name prefix {prefix!r} must be lowercase a-z, 0-9 and '-', start with a letter "
            f"or digit, and leave {_ESCAPED_ROOM} of the {max_length} characters free")


def name_part(text: str, max_length: int = MAX_NAME) -> str:
    """`text` if it is kept (see `is_kept`), else its escaped form: injective in `text`."""
    if is_kept(text, max_length):
        return text
    return _escape([text], max_length)


def prefixed(prefix: str, text: str, max_length: int = MAX_NAME) -> str:
    """`prefix` + the name part of `text`, within `max_length` (injective in `text`)."""
    _check_prefix(prefix, max_length)
    return prefix + name_part(text, max_length - len(prefix))


def joined(prefix: str, *parts: str, max_length: int = MAX_NAME) -> str:
    """`prefix` + parts joined with `--` when every part is kept and it fits, else escaped.

    Injective in the tuple `parts` (for a fixed number of parts): kept parts contain no
    `--`, so the joined form splits back uniquely; escaped forms hash the list itself.
    """
    _check_prefix(prefix, max_length)
    room = max_length - len(prefix)
    text = "--".join(parts)
    if parts and all(p and "--" not in p and _DNS1123_LABEL.match(p) for p in parts) \
            and len(text) <= room:
        return prefix + text
    return prefix + _escape(list(parts), room)


def dns_label(*parts: str, max_length: int = MAX_NAME) -> str:
    """A label for the text `"-".join(parts)`: the name part of that text.

    Injective in the joined TEXT, not in the parts (`("a-b", "c")` and `("a", "b-c")` are
    the same text): use it where the joined text is the identity (a fixed prefix and one
    variable part, volume names of configured entries). Per-user names with more than one
    variable part use `joined`.
    """
    return name_part("-".join(parts), max_length)


def user_namespace(username: str, prefix: str = "kdash-") -> str:
    """The namespace of a hub user: `{prefix}{username}`, `{prefix}{slug}---{hash}` if escaped."""
    return prefixed(prefix, username)


def user_object_name(kind_prefix: str, username: str, server: str = "") -> str:
    """A per-user (and per-server) object name such as `kdash-home-alice`.

    `kind-user` for the default server, `kind-user--server` for a named one; escaped (hash
    of [user, server]) when a part is not kept, so every (user, server) pair differs.
    """
    prefix = f"{kind_prefix}-"
    return prefixed(prefix, username) if not server else joined(prefix, username, server)


def home_dir_name(username: str) -> str:
    """The user's directory on shared storage (a path component): the user's name part."""
    return name_part(username)


def variant_name(base: str, variant: str, shared_namespace: bool = False) -> str:
    """Another object of the same owner, e.g. the claim of another storage preset.

    In a per-user namespace the readable `{base}-{variant}` label is unique (only that
    user's names live there). In a namespace shared by all users it could equal another
    user's base name (`claim-alice` + `nfs` vs the user `alice-nfs`), so there it is
    `{base}.{variant}`: a DNS subdomain (PVC names are subdomains) that no label equals.
    """
    if shared_namespace:
        return f"{base}.{variant}"
    return readable_label(base, variant)  # the 0.1 name: unique inside one user's namespace


def label_value(text: str) -> str:
    """A valid label value (<= 63 chars of [-A-Za-z0-9_.], alphanumeric ends) for `text`.

    Values that are already valid are kept; others are slugged and suffixed with a hash.
    Label values select objects, they do not prove ownership: the exact username is kept in
    an annotation (kdash_hub.labels) and checked there.
    """
    if len(text) <= MAX_NAME and _LABEL_VALUE.match(text):
        return text
    digest = stable_hash(text)
    slug = _LABEL_NOT_SAFE.sub("-", text)
    slug = slug[: MAX_NAME - len(digest) - 1]
    slug = re.sub(r"^[^A-Za-z0-9]+|[^A-Za-z0-9]+$", "", slug)
    return f"{slug}-{digest}" if slug else digest


# -- upgrading from 0.1 ----------------------------------------------------------------------

def readable_label(*parts: str) -> str:
    """The 0.1 rule, NOT injective: `"-".join(parts)` kept when valid, else `<slug>-<10 hex>`.

    Only for names that need to be unique among one user's own objects (inside that user's
    namespace), and to tell admins what a 0.1 name was (`moved_names`).
    """
    raw = "-".join(parts)
    if len(raw) <= MAX_NAME and _DNS1123_LABEL.match(raw):
        return raw
    digest = stable_hash(raw, HASH_LEN)
    slug = _NOT_SAFE.sub("-", raw.lower()).strip("-")
    slug = slug[: MAX_NAME - len(digest) - 1].rstrip("-")
    return f"{slug}-{digest}" if slug else f"x-{digest}"[:MAX_NAME]


def moved_names(username: str, namespace_prefix: str = "kdash-") -> dict[str, tuple[str, str]]:
    """What changed for `username` since 0.1: {what: (old, new)}, empty if nothing moved.

    Covers the namespace, the home directory on nfs/local storage, its PersistentVolume and
    the home provisioning Job (see docs/release-notes.md, "Upgrading").
    """
    old_ns = readable_label(f"{namespace_prefix}{username}")
    new_ns = user_namespace(username, namespace_prefix)
    pairs = {
        "namespace": (old_ns, new_ns),
        "home_dir": (readable_label(username), home_dir_name(username)),
        "persistent_volume": (readable_label("kdash-home", old_ns),
                              dns_label("kdash-home", new_ns)),
        "home_job": (readable_label("kdash-home", username),
                     user_object_name("kdash-home", username)),
    }
    return {k: v for k, v in pairs.items() if v[0] != v[1]}
