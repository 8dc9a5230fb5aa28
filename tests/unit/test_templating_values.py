"""Variable values: types, secrets, durations."""

import textwrap

import pytest

from kdash_hub.templating import RenderError, parse_template, resolve_values

T = parse_template(textwrap.dedent("""\
    kind: Template
    name: V
    variables:
    - {name: NAME, default: v}
    - {name: PASSWORD, type: secret, length: 16}
    - {name: FIXED, type: secret, default: given}
    - {name: SIZE, type: choice, choices: [S, M], default: S}
    - {name: N, type: integer, default: 2}
    - {name: ENABLED, type: boolean, default: yes}
    ---
    apiVersion: v1
    kind: ConfigMap
    metadata: {name: $NAME}
    data: {p: $PASSWORD}
    """))


def test_defaults_and_generated_secret():
    r = resolve_values(T, {}, {"NAME": "v"})
    assert len(r.values["PASSWORD"]) == 16 and r.values["PASSWORD"].isalnum()
    assert r.values["FIXED"] == "given"
    assert (r.values["SIZE"], r.values["N"], r.values["ENABLED"]) == ("S", "2", "true")
    assert r.secret_names == {"PASSWORD", "FIXED"}
    assert "PASSWORD" not in r.public and r.secret["PASSWORD"] == r.values["PASSWORD"]
    other = resolve_values(T, {}, {"NAME": "v"})
    assert other.values["PASSWORD"] != r.values["PASSWORD"]


def test_type_errors_listed_together():
    with pytest.raises(RenderError) as e:
        resolve_values(T, {"SIZE": "XL", "N": "2.5", "ENABLED": "maybe", "BOGUS": 1}, {})
    text = str(e.value)
    for part in ("SIZE", "'XL' is not one of S, M", "N", "ENABLED", "unknown variable 'BOGUS'"):
        assert part in text
    assert len(e.value.messages) == 4


def test_boolean_and_integer_spellings():
    r = resolve_values(T, {"ENABLED": "off", "N": " 7 ", "SIZE": "M"}, {})
    assert (r.values["ENABLED"], r.values["N"], r.values["SIZE"]) == ("false", "7", "M")
    with pytest.raises(RenderError):
        resolve_values(T, {"N": True}, {})


def test_value_limits():
    with pytest.raises(RenderError, match="NUL"):
        resolve_values(T, {"PASSWORD": "a\x00b"}, {})
    with pytest.raises(RenderError, match="longer than"):
        resolve_values(T, {"PASSWORD": "x" * 9000}, {})


def test_yaml11_boolean_variable_name_is_reported():
    from kdash_hub.templating import TemplateError

    text = "kind: Template\nname: X\nvariables:\n- {name: ON}\n---\n" + (
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n")
    with pytest.raises(TemplateError, match="True is not a string"):
        parse_template(text)
