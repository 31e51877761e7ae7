"""The alert rules file: the example validates, every mistake names the file, the key path and what was expected,
secrets stay out of error messages; messages, notifications and the simulator's forced values (no servers)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from central.alerts.config import (
    CHANNEL_KINDS,
    AlertRules,
    AlertSettings,
    EmailChannel,
    RateLimit,
    WebhookChannel,
    load_rules,
    parse_rules,
    rules_loader,
)
from central.alerts.engine import render_message
from central.alerts.notify import Notice, email_message, webhook_body
from central.alerts.observation import Observation
from central.alerts.rules import RULE_KINDS, ReadingRule, check_template
from central.config import load_settings, parse_settings
from floorgate_cli import build_parser
from protocols.sim.forced import ForcedValues
from protocols.sim.modbus_devices import LaumasTluModel, SiloCableModel, WritableModel
from sync.runtime.config import ConfigError

EXAMPLE = Path(__file__).resolve().parents[2] / "firmware-config" / "examples" / "alert-rules.yaml"
HOOK = {"kind": "webhook", "url": "https://hooks.example.com/x"}


def test_the_example_rules_file_validates(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOORGATE_ALERT_WEBHOOK_AUTH", "Bearer abc")
    monkeypatch.setenv("FLOORGATE_SMTP_PASSWORD", "pw-from-env")
    rules = load_rules(EXAMPLE)
    assert {r.kind for r in rules.rules} == RULE_KINDS  # every kind is shown
    assert {c.kind for c in rules.channels.values()} == {"webhook", "email"}
    mail = rules.channels["silo-team"]
    assert isinstance(mail, EmailChannel)
    assert mail.password is not None
    assert mail.password.get_secret_value() == "pw-from-env"
    hook = rules.channels["ops-webhook"]
    assert isinstance(hook, WebhookChannel)
    assert hook.headers["Authorization"].get_secret_value() == "Bearer abc"
    assert "pw-from-env" not in repr(rules)
    assert "Bearer abc" not in repr(rules)


def test_the_example_names_the_missing_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FLOORGATE_ALERT_WEBHOOK_AUTH", raising=False)
    monkeypatch.setenv("FLOORGATE_SMTP_PASSWORD", "x")
    with pytest.raises(ConfigError) as err:
        load_rules(EXAMPLE)
    assert err.value.problems == [
        "channels.ops-webhook.headers: environment variable FLOORGATE_ALERT_WEBHOOK_AUTH is not set"]
    assert str(err.value).startswith(f"{EXAMPLE}: channels.ops-webhook.headers:")


def _rule(**extra: Any) -> dict[str, Any]:
    return {"name": "r1", "kind": "reading", "above": 30, **extra}


@pytest.mark.parametrize(("data", "problem"), [
    ({"rules": [_rule(above="hot")]},
     "rules[0].above: Input should be a valid number, unable to parse string as a number (got 'hot')"),
    ({"rules": [_rule(below=5)]}, "rules[0]: give exactly one of above and below"),
    ({"rules": [{"name": "r1", "kind": "reading"}]}, "rules[0]: give exactly one of above and below"),
    ({"rules": [_rule(for_s=-1)]}, "rules[0].for_s: Input should be greater than or equal to 0 (got -1)"),
    ({"rules": [_rule(severity="urgent")]},
     "rules[0].severity: Input should be 'info', 'warning' or 'critical' (got 'urgent')"),
    ({"rules": [_rule(treshold=3)]}, "rules[0].treshold: unknown key (check the spelling; see the example config)"),
    ({"rules": [{"name": "r1", "kind": "disk_full"}]},
     "rules[0]: Input tag 'disk_full' found using 'kind' does not match any of the expected tags: 'reading', "
     "'device_offline', 'node_backlog', 'node_silent', 'ingest_lag', 'tse', 'integrity'"),
    ({"rules": [{"name": "r1", "kind": "node_silent"}]}, "rules[0].after_s: Field required"),
    ({"rules": [_rule(name="has space")]},
     "rules[0].name: String should match pattern '^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$' (got 'has space')"),
    ({"rules": [_rule(), _rule()]}, "rules[1].name: 'r1' is already the name of rules[0]"),
    ({"rules": [_rule(channels=["pager"])], "channels": {"hook": HOOK}},
     "rules[0].channels[0]: 'pager' is not a channel of this file (defined: hook)"),
    ({"rules": [_rule(message="{device} is {temp}")]},
     "rules[0].message: unknown field {temp} in the message (plain names only); known: detail, device, for_s, kind, "
     "node, point, rule, severity, stream, subject, threshold, unit, value (got '{device} is {temp}')"),
    ({"rules": [_rule(message="{rule.__class__}")]},
     "rules[0].message: unknown field {rule.__class__} in the message (plain names only); known: detail, device, "
     "for_s, kind, node, point, rule, severity, stream, subject, threshold, unit, value (got '{rule.__class__}')"),
    ({"rules": [_rule(message="{value:d}")]},
     "rules[0].message: the message cannot be formatted: Unknown format code 'd' for object of type 'float' "
     "(got '{value:d}')"),
    ({"rules": [_rule(point="bad\\")]},
     "rules[0].point: pattern 'bad\\\\': a backslash must not be last or precede ',', '=', ' ' or '\"' (InfluxDB's "
     "line protocol cannot express that) (got 'bad\\\\')"),
    ({"channels": {"hook": {"kind": "webhook", "url": "ftp://x"}}},
     "channels.hook.url: expected an http:// or https:// URL with a host (got 'ftp://x')"),
    ({"channels": {"hook": {**HOOK, "headers": {"Bad Header": "x"}}}},
     "channels.hook.headers: header name 'Bad Header': expected letters, digits and -"),
    ({"channels": {"hook": {**HOOK, "rate_limit": {"max_notifications": 0}}}},
     "channels.hook.rate_limit.max_notifications: Input should be greater than or equal to 1 (got 0)"),
    ({"channels": {"pager": {"kind": "sms", "number": "1"}}},
     "channels.pager: Input tag 'sms' found using 'kind' does not match any of the expected tags: 'webhook', "
     "'email'"),
    ({"channels": {"mail": {"kind": "email", "host": "smtp.example.com", "from": "not-an-address", "to": []}}},
     "channels.mail.from: expected an e-mail address such as alerts@example.com (got 'not-an-address')"),
    ({"channels": {"mail": {"kind": "email", "host": "smtp.example.com", "from": "a@b.c", "to": ["x@y.z"],
                            "username": "u"}}},
     "channels.mail: username and password go together: give both or neither"),
    ({"channels": {"mail": {"kind": "email", "host": "smtp.example.com", "from": "a@b.c", "to": ["x@y.z"],
                            "username": "u", "password": "p"}}},
     "channels.mail: a login needs starttls: true, or the password crosses the network in clear (only a server "
     "on 127.0.0.1 / ::1 / localhost may do without)"),
    ([1, 2], "(top level): expected a mapping with channels and rules"),
    ({"rules": [{"name": "f", "kind": "tse", "checks": ["gaps"]}]},
     "rules[0].checks[0]: Input should be 'invalid', 'gap' or 'tse_failed' (got 'gaps')"),
    ({"rules": [{"name": "f", "kind": "tse", "checks": []}]},
     "rules[0].checks: List should have at least 1 item after validation, not 0"),
    ({"rules": [{"name": "f", "kind": "tse", "checks": ["gap", "gap"]}]},
     "rules[0].checks: a check is named twice"),
    ({"rules": [{"name": "f", "kind": "tse", "gap_after_s": 0}]},
     "rules[0].gap_after_s: Input should be greater than 0 (got 0)"),
])
def test_mistakes_name_the_key_path_and_what_was_expected(data: object, problem: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_rules(data, source="alert-rules.yaml")
    assert problem in err.value.problems, err.value.problems
    assert str(err.value).startswith("alert-rules.yaml: ")


def test_a_secret_given_wrongly_is_not_echoed() -> None:
    data = {"channels": {"mail": {"kind": "email", "host": "127.0.0.1", "from": "a@b.c", "to": ["x@y.z"],
                                  "username": "u", "password": 987654321},
                         "hook": {**HOOK, "headers": {"X-Token": 123456789}}}}
    with pytest.raises(ConfigError) as err:
        parse_rules(data, source="r.yaml")
    text = str(err.value)
    assert "channels.mail.password" in text
    assert "channels.hook.headers.X-Token" in text
    assert "987654321" not in text
    assert "123456789" not in text


def test_empty_file_means_no_rules(tmp_path: Path) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("", encoding="utf-8")
    assert load_rules(path) == AlertRules()
    with pytest.raises(ConfigError, match="cannot read"):
        load_rules(tmp_path / "missing.yaml")
    path.write_text("rules: [", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_rules(path)


def test_loader_keeps_the_last_good_rules(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump({"rules": [_rule()]}), encoding="utf-8")
    loader = rules_loader(path)
    assert loader is rules_loader(str(path))
    first = loader.get()
    assert first.error is None
    assert first.rules is not None
    assert [r.name for r in first.rules.rules] == ["r1"]
    assert loader.get() is first  # unchanged file: not read again
    path.write_text(yaml.safe_dump({"rules": [_rule(name="r2-longer")]}), encoding="utf-8")
    assert [r.name for r in loader.get().rules.rules] == ["r2-longer"]  # type: ignore[union-attr]
    path.write_text("rules: [{name: r3, kind: reading}]", encoding="utf-8")
    broken = loader.get()
    assert broken.error is not None
    assert "rules[0]: give exactly one of above and below" in broken.error
    assert [r.name for r in broken.rules.rules] == ["r2-longer"]  # type: ignore[union-attr]


def test_alert_settings_in_central_yaml(tmp_path: Path) -> None:
    base = {"database_url": "sqlite:///c.db", "metrics": {"kind": "sqlite", "path": "m.db"}}
    assert parse_settings(base, source="c.yaml").alerts.rules_file is None
    s = parse_settings({**base, "alerts": {"rules_file": "/etc/fg/rules.yaml", "evaluate_every_s": 2}},
                       source="c.yaml")
    assert (s.alerts.rules_file, s.alerts.evaluate_every_s) == (Path("/etc/fg/rules.yaml"), 2.0)
    with pytest.raises(ConfigError) as err:
        parse_settings({**base, "alerts": {"evaluate_every_s": 0, "rulesfile": "x"}}, source="c.yaml")
    assert err.value.problems == ["alerts.evaluate_every_s: Input should be greater than or equal to 0.1 (got 0)",
                                  "alerts.rulesfile: unknown key (check the spelling; see the example config)"]
    path = tmp_path / "central.yaml"
    path.write_text(yaml.safe_dump(base), encoding="utf-8")
    s = load_settings(path, environ={"FLOORGATE_ALERTS__RULES_FILE": "/srv/rules.yaml"})
    assert s.alerts.rules_file == Path("/srv/rules.yaml")


def _reading(**extra: Any) -> ReadingRule:
    rules = parse_rules({"rules": [_rule(**extra)]}, source="t")
    rule = rules.rules[0]
    assert isinstance(rule, ReadingRule)
    return rule


def test_messages() -> None:
    ob = Observation("mill-01/silo-3/temperature_5", True, 41.25,
                     context={"node": "mill-01", "device": "silo-3", "point": "temperature_5", "unit": "°C"})
    assert render_message(_reading(for_s=600), ob) == "mill-01/silo-3/temperature_5 is 41.25°C, above 30°C for 600 s"
    assert render_message(_reading(), ob) == "mill-01/silo-3/temperature_5 is 41.25°C, above 30°C"
    custom = _reading(message="{device}/{point}: {value:.1f} {unit} > {threshold:g} [{severity}] {stream}|")
    assert render_message(custom, ob) == "silo-3/temperature_5: 41.2 °C > 30 [warning] |"
    assert render_message(custom, Observation("s", True, None)) == "/: nan  > 30 [warning] |"


def test_notification_formats() -> None:
    started, resolved = datetime(2025, 1, 7, 10, 0, tzinfo=UTC), datetime(2025, 1, 7, 10, 30, tzinfo=UTC)
    n = Notice(alert_id=12, rule="silo-hot-spot", subject="mill-01/silo-3/temperature_5", severity="critical",
               state="resolved", message="resolved (back within the threshold): hot", value=20.5,
               started_at=started, resolved_at=resolved)
    assert webhook_body(n) == {
        "alert_id": 12, "rule": "silo-hot-spot", "subject": "mill-01/silo-3/temperature_5", "severity": "critical",
        "state": "resolved", "message": "resolved (back within the threshold): hot", "value": 20.5,
        "started_at": "2025-01-07T10:00:00+00:00", "resolved_at": "2025-01-07T10:30:00+00:00"}
    channel = EmailChannel.model_validate({"kind": "email", "host": "127.0.0.1", "from": "fg@example.com",
                                           "to": ["a@example.com", "b@example.com"]})
    msg = email_message(channel, n)
    assert msg["Subject"] == "[RESOLVED] critical silo-hot-spot: mill-01/silo-3/temperature_5"
    assert msg["To"] == "a@example.com, b@example.com"
    body = msg.get_content()
    assert body.startswith("RESOLVED: resolved (back within the threshold): hot\n")
    assert "value:     20.5\n" in body
    assert "resolved:  2025-01-07T10:30:00+00:00" in body
    hook = WebhookChannel.model_validate({"kind": "webhook", "url": "https://hooks.slack.com/services/T0/B0/XyZ"})
    assert hook.masked_url == "https://hooks.slack.com/…"
    assert WebhookChannel.model_validate({"kind": "webhook", "url": "http://10.0.0.5:8080/"}).masked_url == \
        "http://10.0.0.5:8080/"


# --- the simulator's control -------------------------------------------------------------------------------------


def test_forced_values_drive_a_silo_sensor(tmp_path: Path) -> None:
    force = tmp_path / "force.json"
    model = ForcedValues(SiloCableModel(8, seed=5, hot_spot=5), force)
    assert model.points == SiloCableModel(8).points
    normal = model.sample(0.0)["temperature_3"]
    assert normal < 30
    force.write_text(json.dumps({"temperature_3": 45.0, "no_such_point": 1}), encoding="utf-8")
    values = model.sample(1.0)
    assert values["temperature_3"] == 45.0
    assert "no_such_point" not in values
    force.write_text('{"temperature_3": 4', encoding="utf-8")  # half written: the values forced before stay
    assert model.sample(2.0)["temperature_3"] == 45.0
    force.unlink()
    assert model.sample(3.0)["temperature_3"] < 30


def test_forced_values_keep_the_model_writable(tmp_path: Path) -> None:
    wrapped = ForcedValues(LaumasTluModel(seed=1), tmp_path / "none.json")
    assert isinstance(wrapped, WritableModel)
    assert not isinstance(ForcedValues(SiloCableModel(8), tmp_path / "none.json"), WritableModel)


def test_force_file_option_is_for_modbus_devices_only(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "floorgate_cli", "simulate", "weighbridge", "--force-file",
                           str(tmp_path / "f.json")], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2
    assert "--force-file applies to Modbus devices, not the weighbridge scale" in done.stderr


def test_the_readme_section_matches_the_code() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## Alert rules\n", 1)[1].split("\n## ", 1)[0]
    snippet = re.search(r"`(alerts: \{.*?\})`", section)
    assert snippet is not None
    base = {"database_url": "sqlite:///c.db", "metrics": {"kind": "sqlite", "path": "m.db"}}
    settings = parse_settings({**base, **yaml.safe_load(snippet.group(1))}, source="README")
    assert settings.alerts.rules_file == Path("/etc/floorgate/alert-rules.yaml")
    assert f"(default {AlertSettings().evaluate_every_s:g} s)" in section
    template = re.search(r'`"(\{device\}[^`]*)"`', section)
    assert template is not None
    check_template(template.group(1))
    for kind in RULE_KINDS | CHANNEL_KINDS:
        assert f"`{kind}`" in section, kind
    limit = RateLimit()
    assert f"(default {limit.max_notifications})" in section
    assert f"`rate_limit.window_s` ({limit.window_s:g})" in section
    assert f"(`max_attempts`, default {WebhookChannel.model_fields['max_attempts'].default})" in section
    assert "firmware-config/examples/alert-rules.yaml" in section
    assert EXAMPLE.exists()
    args = build_parser().parse_args(["simulate", "silo-cable-8", "--force-file", "force.json"])
    assert args.force_file == Path("force.json")
