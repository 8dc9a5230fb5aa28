"""Findings 3 and 5: records the user can edit.

3 (medium): one bad record (a TTL of `²`, a timestamp without a zone, ...) made the admin's
  list of all instances answer 500 and every culler cycle fail on side-service expiry.
5 (low): lifetimes and caps came from fields the user can edit; an expiry edited to 2099
  held beyond the 7-day maximum.

Now every record is signed; one that doesn't verify, or doesn't parse, is skipped, logged,
shown to admins as "tampered" and never acted on, and lifetimes come only from the signed
content, capped again when read.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from kdash_hub.services.culler.sideservices import SideServiceExpiry
from kdash_hub.services.launcher import lifecycle
from kdash_hub.services.launcher.records import (
    ANN_RECORD,
    ANN_SIGNATURE,
    InstanceRecord,
    now_utc,
    record_name,
)
from tests.fixtures.launcher import identity_kube
from tests.fixtures.security import ADMIN, ATTACKER, ATTACKER_NS, VICTIM, VICTIM_NS

SEVEN_DAYS = 7 * 86400


def _edit(**fields):
    def change(content: dict) -> None:
        content.update(fields)
    return change


# (case, how mallory breaks her record "web": a change of the signed content and/or of
# annotations — what the old code read, and what the new one reads)
BAD_RECORDS = [
    ("ttl-superscript-two", _edit(ttl="²"), {"kdash-hub.io/ttl-seconds": "²"}),
    ("timestamp-without-zone", _edit(expires_at="2024-01-01T00:00:00"),
     {"kdash-hub.io/expires-at": "2024-01-01T00:00:00"}),
    ("garbage-json", None, {ANN_RECORD: "{not json ² \u202e"}),
    ("missing-fields", None, {ANN_RECORD: json.dumps({"v": 1, "name": "web"})}),
    ("bad-signature", None, {ANN_SIGNATURE: "v1:" + "f" * 64}),
    ("no-signature", None, {ANN_SIGNATURE: None}),
    ("no-record", None, {ANN_RECORD: None, ANN_SIGNATURE: None}),
    ("expiry-2099", _edit(expires_at="2099-01-01T00:00:00Z"), {}),
    ("cap-removed", _edit(max_ttl=None, ttl=None, expires_at=None), {}),
]


@pytest.mark.parametrize("case,change,annotations", BAD_RECORDS, ids=[c[0] for c in BAD_RECORDS])
async def test_a_bad_record_breaks_no_listing_and_no_expiry_cycle(attack, case, change,
                                                                  annotations):
    env = attack.env
    await attack.launch(ATTACKER, "web")
    await attack.launch(VICTIM, "short")
    status, _ = await env.call("POST", "instances", VICTIM,  # expires in 2 s, then deleted
                               json_body={"template": "echo", "name": "brief", "ttl": "2s"})
    assert status == 201
    await attack.edit_record(ATTACKER_NS, "web", change, annotations)

    # every listing answers, with everyone else's instances, the bad record set apart
    status, listing = await env.call("GET", "instances?all=1", ADMIN)
    assert status == 200, listing
    names = {(i["owner"], i["name"]) for i in listing["instances"]}
    assert {(VICTIM, "short"), (VICTIM, "brief")} <= names
    assert (ATTACKER, "web") not in names
    bad = [r for r in listing["invalid_records"] if r["namespace"] == ATTACKER_NS]
    assert [(r["record"], r["status"]) for r in bad] == [(record_name("web"), "tampered")]
    for user in (ATTACKER, VICTIM):
        status, own = await env.call("GET", "instances", user)
        assert status == 200, own
    status, page, _ = await attack.page(ADMIN, "?all=1")  # the admin's page too
    assert status == 200 and record_name("web") in page
    # her own instance answers 409 with a reason, to every operation
    for method, path in (("GET", ""), ("POST", "/stop"), ("POST", "/start"),
                         ("POST", "/extend"), ("DELETE", "")):
        status, body = await env.call(method, f"instances/{ATTACKER}/web{path}", ATTACKER,
                                      json_body={"by": "1h"})
        assert status == 409 and "changed outside the launcher" in body["message"], body

    # a culler expiry cycle (with the culler's own identity in the real tier), 3 s on: the
    # victim's expired instance goes, the bad record stays
    async with identity_kube("KDASH_TEST_CULLER_KUBECONFIG", attack.kube) as culler:
        side = SideServiceExpiry(culler, retries=0, signer=attack.signer)
        results = await side.expire(datetime.now(UTC) + timedelta(seconds=3))
    assert [(r.owner, r.name, r.action, r.done) for r in results
            if r.namespace in (VICTIM_NS, ATTACKER_NS)] == [(VICTIM, "brief", "delete", True)]
    assert await attack.kube.get("Deployment", "brief", VICTIM_NS) is None
    assert await attack.kube.get("Deployment", "web", ATTACKER_NS) is not None  # untouched
    assert await attack.kube.get("Secret", record_name("web"), ATTACKER_NS) is not None
    # even a cycle far in the future never acts on it
    far = await lifecycle.expired_instances(attack.kube, datetime(2100, 1, 1, tzinfo=UTC),
                                            attack.signer)
    assert ATTACKER_NS not in {r.namespace for r in far}
    assert "skipped" in attack.launcher_log() or "refused" in attack.launcher_log()
    attack.assert_no_server_errors()


async def test_an_expiry_edited_to_2099_is_not_believed(attack):
    env = attack.env
    await attack.launch(ATTACKER, "web")
    await attack.edit_record(ATTACKER_NS, "web", _edit(expires_at="2099-01-01T00:00:00Z"),
                             {"kdash-hub.io/expires-at": "2099-01-01T00:00:00Z"})
    status, listing = await env.call("GET", "instances", ATTACKER)
    assert status == 200 and listing["instances"] == []
    assert "2099" not in json.dumps(listing)
    # and no request of the API gets past the maximum either
    status, body = await env.call("POST", "instances", ATTACKER, json_body={
        "template": "echo", "name": "long", "ttl": "27000d"})
    assert status == 400 and "at most" in body["message"]
    await attack.launch(ATTACKER, "other")
    status, info = await env.call("POST", f"instances/{ATTACKER}/other/extend", ATTACKER,
                                  json_body={"by": "3650d"})
    assert status == 200 and info["ttl_left_seconds"] <= SEVEN_DAYS
    assert info["expires_at"] < "2099"


async def test_a_signed_record_beyond_its_cap_is_capped_when_read(attack):
    """Even a record with a valid signature (an older launcher, a bug) can't live longer
    than its cap from its last renewal: reading enforces it, for the list and the culler."""
    now = now_utc()
    rec = InstanceRecord(
        namespace=ATTACKER_NS, name="forever", owner=ATTACKER, template="echo",
        template_name="Echo", created_at=now, renewed_at=now,
        expires_at=datetime(2099, 1, 1, tzinfo=UTC), expiry="delete", ttl=3600,
        max_ttl=SEVEN_DAYS, objects=[])
    await attack.plant_signed(rec)
    status, listing = await attack.env.call("GET", "instances", ATTACKER)
    assert status == 200
    [info] = [i for i in listing["instances"] if i["name"] == "forever"]
    assert info["ttl_left_seconds"] <= SEVEN_DAYS
    assert info["expires_at"] == (now + timedelta(seconds=SEVEN_DAYS)).strftime(
        "%Y-%m-%dT%H:%M:%SZ")
    later = now + timedelta(seconds=SEVEN_DAYS + 60)
    refs = await lifecycle.expired_instances(attack.kube, later, attack.signer)
    assert (ATTACKER_NS, "forever", "delete") in {(r.namespace, r.name, r.on_expiry)
                                                  for r in refs}
    # a cap removed from a signed record: the launcher's own max_ttl still holds
    rec = InstanceRecord(
        namespace=ATTACKER_NS, name="uncapped", owner=ATTACKER, template="echo",
        created_at=now, renewed_at=now, expires_at=datetime(2099, 1, 1, tzinfo=UTC),
        max_ttl=None, objects=[])
    await attack.plant_signed(rec)
    status, listing = await attack.env.call("GET", "instances", ATTACKER)
    [info] = [i for i in listing["instances"] if i["name"] == "uncapped"]
    assert info["ttl_left_seconds"] <= SEVEN_DAYS
