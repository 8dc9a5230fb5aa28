"""Batch work in templates: cron schedules, Job/CronJob/Argo checks at load and render, the
instance's labels on what a CronJob makes, ttlSecondsAfterFinished capped."""

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from kdash_hub import labels as L
from kdash_hub.templating import RenderError, TemplateError, parse_template, render_objects
from kdash_hub.templating.batch import cap_ttl_after_finished
from kdash_hub.templating.cron import CronError, parse_cron

T0 = datetime(2026, 12, 2, 3, 17, 30, tzinfo=UTC)  # a Wednesday


@pytest.mark.parametrize("spec, after, expected", [
    ("* * * * *", T0, datetime(2026, 12, 2, 3, 18, tzinfo=UTC)),
    ("0 2 * * *", T0, datetime(2026, 12, 3, 2, 0, tzinfo=UTC)),
    ("*/15 * * * *", T0, datetime(2026, 12, 2, 3, 30, tzinfo=UTC)),
    ("5,10-12 4 * * *", T0, datetime(2026, 12, 2, 4, 5, tzinfo=UTC)),
    ("0 0 * * sun", T0, datetime(2026, 12, 6, 0, 0, tzinfo=UTC)),
    ("0 0 1 JAN *", T0, datetime(2027, 1, 1, 0, 0, tzinfo=UTC)),
    ("@hourly", T0, datetime(2026, 12, 2, 4, 0, tzinfo=UTC)),
    ("@weekly", T0, datetime(2026, 12, 6, 0, 0, tzinfo=UTC)),
    # both day fields restricted: either one (cron's OR rule): the 13th or any Friday
    ("0 0 13 * 5", T0, datetime(2026, 12, 4, 0, 0, tzinfo=UTC)),
    ("0 0 29 2 *", T0, datetime(2028, 2, 29, 0, 0, tzinfo=UTC)),
    ("30 3 * * ?", T0, datetime(2026, 12, 2, 3, 30, tzinfo=UTC)),
])
def test_next_time(spec, after, expected):
    assert parse_cron(spec).next_after(after) == expected


def test_next_time_in_a_time_zone():
    after = T0.astimezone(ZoneInfo("Europe/Athens"))  # 05:17 there
    got = parse_cron("0 6 * * *").next_after(after)
    assert got.astimezone(UTC) == datetime(2026, 12, 2, 4, 0, tzinfo=UTC)


@pytest.mark.parametrize("spec, words", [
    ("", "5 fields"), ("* * * *", "4 fields"), ("* * * * * *", "6 fields"),
    ("60 * * * *", "outside 0-59"), ("* 24 * * *", "outside 0-23"),
    ("* * 0 * *", "outside 1-31"), ("* * * 13 *", "outside 1-12"),
    ("* * * * 7", "outside 0-6"), ("*/0 * * * *", "step"), ("5-1 * * * *", "backwards"),
    ("a * * * *", "not a number"), ("@every 5m", "not one of"), ("1,,2 * * * *", "empty"),
    ("TZ=UTC 0 * * * *", "timeZone"), ("0 0 31 2 *", "never fires"),
])
def test_bad_schedules_say_what_is_wrong(spec, words):
    with pytest.raises(CronError, match=words):
        parse_cron(spec).next_after(T0)


def test_non_string_schedule():
    with pytest.raises(CronError):
        parse_cron(5)


CRON_TEMPLATE = """\
kind: Template
name: Nightly
variables:
- {name: NAME, default: nightly}
- {name: SCHEDULE, default: "0 2 * * *"}
---
apiVersion: batch/v1
kind: CronJob
metadata: {name: $NAME}
spec:
  schedule: $SCHEDULE
  jobTemplate:
    metadata:
      namespace: kdash-bob
      labels: {kdash-hub.io/owner: bob, kdash-hub.io/instance: bobs, mine: "yes"}
    spec:
      template:
        metadata:
          namespace: kdash-bob
          labels: {kdash-hub.io/owner: bob, kdash-hub.io/instance: bobs}
        spec:
          restartPolicy: Never
          containers: [{name: run, image: busybox, command: [date]}]
"""


def render(template, **values):
    return render_objects(template, {"NAME": "nightly", **values}, namespace="kdash-alice",
                          username="alice", instance="nightly")


def test_cronjob_runs_carry_the_instance_labels_whatever_the_template_claims():
    template = parse_template(CRON_TEMPLATE)
    [cron] = render(template, SCHEDULE="*/5 * * * *")
    assert cron["metadata"]["namespace"] == "kdash-alice"
    job = cron["spec"]["jobTemplate"]
    pod = job["spec"]["template"]
    for meta in (cron["metadata"], job["metadata"], pod["metadata"]):
        assert meta["labels"][L.OWNER] == "alice"
        assert meta["labels"][L.INSTANCE] == "nightly"
        assert meta["annotations"][L.OWNER_ANNOTATION] == "alice"
    assert "namespace" not in job["metadata"] and "namespace" not in pod["metadata"]
    assert job["metadata"]["labels"]["mine"] == "yes"


def test_a_schedule_that_is_not_cron_is_refused_at_render_and_at_load():
    template = parse_template(CRON_TEMPLATE)
    with pytest.raises(RenderError, match="spec.schedule: .*6 fields"):
        render(template, SCHEDULE="* * * * * *")
    with pytest.raises(RenderError, match="outside 0-59"):
        render(template, SCHEDULE="99 * * * *")
    literal = CRON_TEMPLATE.replace("schedule: $SCHEDULE", "schedule: every night")
    with pytest.raises(TemplateError, match="CronJob: spec.schedule"):
        parse_template(literal)


def test_a_value_cannot_add_a_document_or_a_field():
    template = parse_template(CRON_TEMPLATE)
    with pytest.raises(RenderError, match="schedule"):
        render(template, SCHEDULE="0 2 * * *\n---\napiVersion: v1\nkind: Namespace")
    with pytest.raises(RenderError, match="schedule"):
        render(template, SCHEDULE='0 2 * * *"\n  suspend: true')
    # a value is one string in its field: never a second object, never another field
    text = CRON_TEMPLATE.replace("command: [date]", "command: [sh, -c, $SCHEDULE]").replace(
        "schedule: $SCHEDULE", "schedule: '0 2 * * *'")
    injected = "x\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: evil}"
    objects = render(parse_template(text), SCHEDULE=injected)
    assert [o["kind"] for o in objects] == ["CronJob"]
    container = objects[0]["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["sh", "-c", injected]


def test_cronjob_shape_is_checked_at_load():
    with pytest.raises(TemplateError, match="jobTemplate.spec.template"):
        parse_template(CRON_TEMPLATE.replace("jobTemplate:", "notJobTemplate:"))


def test_manual_selector_is_refused():
    text = CRON_TEMPLATE.replace("    spec:\n      template:",
                                 "    spec:\n      manualSelector: true\n      template:")
    with pytest.raises(TemplateError, match="manualSelector"):
        parse_template(text)


@pytest.mark.parametrize("given, cap, expected", [
    (None, 3600, 3600), (60, 3600, 60), (86400, 3600, 3600), (-1, 3600, 3600),
    ("x", 3600, 3600), (True, 3600, 3600), (500, None, 500),
])
def test_ttl_after_finished_is_capped(given, cap, expected):
    job = {"kind": "Job", "spec": {"template": {}}}
    if given is not None:
        job["spec"]["ttlSecondsAfterFinished"] = given
    cap_ttl_after_finished(job, cap)
    assert job["spec"]["ttlSecondsAfterFinished"] == expected
    cron = {"kind": "CronJob", "spec": {"jobTemplate": {"spec": {"template": {}}}}}
    cap_ttl_after_finished(cron, 60)
    assert cron["spec"]["jobTemplate"]["spec"]["ttlSecondsAfterFinished"] == 60


def test_kinds_not_allowed_are_refused_at_load():
    text = CRON_TEMPLATE.replace("kind: CronJob", "kind: DaemonSet")
    with pytest.raises(TemplateError, match="kind DaemonSet is not allowed"):
        parse_template(text)
    with pytest.raises(TemplateError, match="kind CronJob is not allowed"):
        parse_template(CRON_TEMPLATE, allowed_kinds=["Job"])


ARGO = """\
kind: Template
name: Flow
variables:
- {name: NAME, default: flow}
---
apiVersion: argoproj.io/v1alpha1
kind: CronWorkflow
metadata: {name: $NAME}
spec:
  schedule: "0 * * * *"
  workflowSpec:
    entrypoint: main
    templates:
    - name: main
      container: {image: busybox, command: [date]}
"""


def test_argo_objects_get_the_instance_labels_on_their_pods():
    [flow] = render_objects(parse_template(ARGO), {"NAME": "flow"}, namespace="kdash-alice",
                            username="alice", instance="flow")
    assert flow["spec"]["workflowMetadata"]["labels"][L.INSTANCE] == "flow"
    assert flow["spec"]["workflowSpec"]["podMetadata"]["labels"][L.OWNER] == "alice"
    with pytest.raises(TemplateError, match="CronWorkflow: spec.schedule"):
        parse_template(ARGO.replace('"0 * * * *"', '"never"'))
