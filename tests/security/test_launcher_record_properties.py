"""Property tests (hypothesis) of what the launcher reads from places a user can write.

- Records: a signed record reads back as it was; any change to it (a character of its
  content, its signature, where it lives, any field, another key) is rejected; and
  whatever garbage a Secret holds — even garbage signed with the right key — reading it
  raises nothing but RecordInvalid.
- Cookies: whatever cookies a request carries, none of the hub's or the launcher's reach
  an instance, and every other one does.
"""

from __future__ import annotations

import json
import string
from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from kdash_hub.services.launcher.proxy import CookieFilter
from kdash_hub.services.launcher.records import (
    ANN_RECORD,
    ANN_SIGNATURE,
    INSTANCE_NAME,
    InstanceRecord,
    RecordInvalid,
)
from kdash_hub.services.launcher.signing import RecordSigner

KEY = b"k" * 32
SIGNER = RecordSigner(KEY)
OTHER = RecordSigner(b"o" * 32)
PROPERTY = settings(max_examples=150, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])

texts = st.text(max_size=40)
names = st.from_regex(INSTANCE_NAME, fullmatch=True)
times = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2090, 1, 1),
                     timezones=st.just(UTC)).map(lambda t: t.replace(microsecond=0))
seconds = st.none() | st.integers(min_value=1, max_value=10 * 366 * 86400)
objects = st.lists(st.fixed_dictionaries({
    "kind": st.sampled_from(["Deployment", "StatefulSet", "Service", "ConfigMap", "Job"]),
    "name": names, "uid": st.uuids().map(str) | st.just("")}), max_size=5)
proxies = st.none() | st.fixed_dictionaries({
    "service": names, "service_port": st.integers(1, 65535),
    "port": st.none() | st.integers(1, 65535),
    "workload": st.none() | st.fixed_dictionaries({
        "kind": st.sampled_from(["Deployment", "StatefulSet"]), "name": names}),
    "http": st.booleans(), "strip_prefix": st.booleans()})


@st.composite
def records(draw) -> InstanceRecord:
    name = draw(names)
    return InstanceRecord(
        namespace=draw(st.from_regex(r"kdash-[a-z0-9]{1,20}", fullmatch=True)),
        name=name, owner=draw(st.text(min_size=1, max_size=30)),
        template=draw(st.text(min_size=1, max_size=20)), template_name=draw(texts),
        created_at=draw(times), renewed_at=draw(times), expires_at=draw(st.none() | times),
        expiry=draw(st.sampled_from(["stop", "delete"])), ttl=draw(seconds),
        max_ttl=draw(seconds), state=draw(st.sampled_from(["running", "stopped"])),
        objects=draw(objects),
        replicas=draw(st.dictionaries(texts, st.integers(0, 100), max_size=3)),
        values=draw(st.dictionaries(texts, texts, max_size=4)), proxy=draw(proxies))


def read(secret: object, signer: RecordSigner = SIGNER) -> InstanceRecord:
    return InstanceRecord.from_secret(secret, signer)


@PROPERTY
@given(records())
def test_a_signed_record_reads_back_as_it_was(rec):
    assert read(rec.to_secret(SIGNER)) == rec


@PROPERTY
@given(records(), st.data())
def test_any_change_of_the_signed_text_is_rejected(rec, data):
    secret = rec.to_secret(SIGNER)
    text = secret["metadata"]["annotations"][ANN_RECORD]
    i = data.draw(st.integers(0, len(text) - 1))
    c = data.draw(st.characters())
    assume(c != text[i])
    mutated = text[:i] + c + text[i + 1:]
    how = data.draw(st.sampled_from(["replace", "insert", "delete", "append"]))
    if how == "insert":
        mutated = text[:i] + c + text[i:]
    elif how == "delete":
        mutated = text[:i] + text[i + 1:]
    elif how == "append":
        mutated = text + c
    secret["metadata"]["annotations"][ANN_RECORD] = mutated
    with pytest.raises(RecordInvalid):
        read(secret)


FIELDS = ["v", "namespace", "name", "owner", "template", "template_name", "created_at",
          "renewed_at", "expires_at", "expiry", "ttl", "max_ttl", "state", "objects",
          "replicas", "values", "proxy"]
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=10)


@PROPERTY
@given(records(), st.sampled_from(FIELDS), json_values)
def test_any_changed_field_is_rejected(rec, field, value):
    secret = rec.to_secret(SIGNER)
    content = json.loads(secret["metadata"]["annotations"][ANN_RECORD])
    assume(content.get(field) != value)
    content[field] = value
    secret["metadata"]["annotations"][ANN_RECORD] = json.dumps(content)
    with pytest.raises(RecordInvalid):
        read(secret)


@PROPERTY
@given(records(), st.sampled_from(["signature", "name", "namespace", "key"]), texts)
def test_a_changed_signature_place_or_key_is_rejected(rec, what, text):
    secret = rec.to_secret(SIGNER)
    meta = secret["metadata"]
    if what == "signature":
        assume(text != meta["annotations"][ANN_SIGNATURE])
        meta["annotations"][ANN_SIGNATURE] = text
    elif what in ("name", "namespace"):
        assume(text != meta[what])
        meta[what] = text
    with pytest.raises(RecordInvalid):
        read(secret, OTHER if what == "key" else SIGNER)


secrets_like = st.recursive(
    json_values, lambda inner: st.dictionaries(
        st.sampled_from(["metadata", "annotations", "name", "namespace", ANN_RECORD,
                         ANN_SIGNATURE, "data", "kind"]) | st.text(max_size=5),
        inner, max_size=5), max_leaves=20)


@PROPERTY
@given(secrets_like)
def test_any_secret_shape_raises_only_record_invalid(secret):
    with pytest.raises(RecordInvalid):
        read(secret)


@PROPERTY
@given(st.dictionaries(st.text(max_size=30), st.text() | json_values, max_size=4),
       st.text() | st.binary().map(lambda b: b.decode("utf-8", "surrogateescape")),
       st.text(max_size=80))
def test_any_annotation_garbage_raises_only_record_invalid(extra, text, signature):
    secret = {"metadata": {"name": "kdash-instance-web", "namespace": "kdash-x",
                           "annotations": {**extra, ANN_RECORD: text,
                                           ANN_SIGNATURE: signature}}}
    with pytest.raises(RecordInvalid):
        read(secret)


@PROPERTY
@given(json_values | st.fixed_dictionaries(
    {k: json_values for k in FIELDS}) | st.binary().map(
    lambda b: b.decode("latin-1")))
def test_garbage_signed_with_the_right_key_raises_only_record_invalid(garbage):
    """What a signature covers is still checked field by field: even validly signed
    garbage (a launcher bug, an old format) can't raise anything else."""
    text = garbage if isinstance(garbage, str) else json.dumps(garbage)
    secret = {"metadata": {"name": "kdash-instance-web", "namespace": "kdash-x",
                           "annotations": {ANN_RECORD: text,
                                           ANN_SIGNATURE: SIGNER.sign(text.encode(
                                               "utf-8", "surrogatepass"))}}}
    try:
        rec = read(secret)
    except RecordInvalid:
        return
    assert isinstance(rec, InstanceRecord)  # only if it is a complete, well-formed record


PROTECTED = ["jupyterhub-session-id", "jupyterhub-hub-login", "jupyterhub-services",
             "jupyterhub-user-alice", "jupyterhub-user-b%40c-oauth-state",
             "service-kdash-launcher", "service-kdash-launcher-oauth-state",
             "service-kdash-launcher-oauth-state-AbCdEfGh", "_xsrf"]
cookie_names = st.text(alphabet=string.ascii_letters + string.digits + "-_.%@", min_size=1,
                       max_size=30)


@PROPERTY
@given(st.lists(st.sampled_from(PROTECTED).map(lambda n: n) | cookie_names, max_size=8),
       st.lists(st.booleans(), min_size=8, max_size=8))
def test_no_protected_cookie_passes_and_every_other_does(names_, host_prefix):
    cookies = CookieFilter("service-kdash-launcher", "service-kdash-launcher-oauth-state")
    sent = [("__Host-" + n if host else n) for n, host in zip(names_, host_prefix, strict=False)]
    header = "; ".join(f"{n}=v{i}" for i, n in enumerate(sent))
    kept = [part.split("=", 1)[0] for part in cookies.strip(header).split("; ") if part]
    for n in sent:
        bare = n.removeprefix("__Host-")
        if bare in PROTECTED:
            assert n not in kept
    assert all(not cookies.protected(n) for n in kept)
    assert [n for n in sent if not cookies.protected(n)] == kept
