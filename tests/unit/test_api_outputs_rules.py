"""The rules behind what the API shows and exports (issue 14, findings 9–11): URL masking, secret-free configuration
errors, CSV formula neutralisation, cursor checks. The live behaviour is in ``hostile/test_api_outputs_hostile.py``."""

from __future__ import annotations

from datetime import datetime

import pytest
from sqlalchemy import BigInteger, Column, DateTime, MetaData, Numeric, String, Table

from central.api.csvexport import neutralise
from central.api.errors import ApiError
from central.api.pagination import cursor_value, decode_cursor
from sync.runtime.config import problems_from_pydantic, yaml_problem
from sync.runtime.redact import mask_url, mask_urls_in


@pytest.mark.parametrize(("url", "shown"), [
    ("https://user:pw@hooks.example:8443/hook/SECRETTOKEN?token=x", "https://hooks.example:8443/…?…"),
    ("https://hooks.slack.com/services/T000/B000/XXXXXXXX", "https://hooks.slack.com/…"),
    ("https://discord.com/api/webhooks/123/abc#frag", "https://discord.com/…#…"),
    ("http://10.0.0.5:8080/", "http://10.0.0.5:8080/"),
    ("http://[::1]:9/x", "http://[::1]:9/…"),
    ("hooks.example/hook/SECRETTOKEN", "<a URL without scheme or host>"),
    ("http://host:notaport/TOKEN", "<a URL that cannot be parsed>"),
])
def test_mask_url_keeps_scheme_host_and_port_only(url: str, shown: str) -> None:
    assert mask_url(url) == shown


def test_mask_url_keep_path_still_drops_credentials_and_query() -> None:
    assert mask_url("postgresql+psycopg://fg:pw@db:5432/floorgate?sslpassword=s", keep_path=True) == \
        "postgresql+psycopg://db:5432/floorgate?…"
    assert mask_urls_in("POST failed for url 'https://u:p@h/T/K?x=1'") == "POST failed for url 'https://h/…?…'"


def test_config_errors_name_the_key_never_a_secret_value() -> None:
    errors = [
        {"loc": ("auth", "jwt_secret"), "msg": "Value error, expected at least 32 characters", "input": "shortSECRET",
         "type": "value_error"},
        {"loc": ("channels", "h", "url"), "msg": "Value error, expected a URL", "input": "hooks.example/TOKEN",
         "type": "value_error"},
        {"loc": ("channels", "h", "url"), "msg": "bad", "input": "ftp://u:pw@h/TOKEN", "type": "value_error"},
        {"loc": ("channels", "h", "headers", "Authorization"), "msg": "bad", "input": "Bearer T", "type": "x"},
        {"loc": ("broker", "tls", "key_file"), "msg": "file not found", "input": "n1/tls.key", "type": "x"},
        {"loc": ("note",), "msg": "bad", "input": "see https://u:pw@h/TOKEN", "type": "x"},
    ]
    lines = problems_from_pydantic(errors)
    assert lines == [
        "auth.jwt_secret: expected at least 32 characters (the value given is not shown: it may be a secret)",
        "channels.h.url: expected a URL (the value given is not shown: it may be a secret)",
        "channels.h.url: bad (got 'ftp://h/…')",
        "channels.h.headers.Authorization: bad (the value given is not shown: it may be a secret)",
        "broker.tls.key_file: file not found (got 'n1/tls.key')",
        "note: bad (got 'see https://h/…')",
    ]


def test_yaml_errors_carry_no_excerpt_of_the_file() -> None:
    import yaml

    with pytest.raises(yaml.YAMLError) as info:
        yaml.safe_load('auth:\n  jwt_secret: "SECRETVALUE\n')
    text = yaml_problem(info.value)
    assert "SECRETVALUE" not in text
    assert "line " in text


@pytest.mark.parametrize(("cell", "out"), [
    ('=HYPERLINK("http://x")', '\'=HYPERLINK("http://x")'), ("+KASSE", "'+KASSE"), ("-1+1", "'-1+1"),
    ("@SUM(A1)", "'@SUM(A1)"), ("\tx", "'\tx"), ("\rx", "'\rx"), ("-12.50", "-12.50"), ("+3", "+3"),
    ("-1e5", "-1e5"), ("12", "12"), ("a=b", "a=b"), ("", ""), (None, None), (5, 5),
])
def test_formula_cells_get_a_quote_numbers_do_not(cell: object, out: object) -> None:
    assert neutralise(cell) == out


_t = Table("t", MetaData(), Column("at", DateTime(timezone=True)), Column("n", BigInteger), Column("s", String),
           Column("d", Numeric(18, 6)))


@pytest.mark.parametrize(("column", "raw"), [
    ("at", None), ("at", "2025-01-01"), ("at", {"dt": "not a time"}), ("at", {"dt": 5}),
    ("n", None), ("n", "1"), ("n", 2**70), ("n", True), ("s", None), ("s", 5), ("s", "a\x00b"),
    ("d", {"dec": "NaN"}), ("d", {"dec": 5}), ("d", "1.5"), ("d", {"dec": "1e400"}),
])
def test_cursor_values_of_the_wrong_type_are_invalid_cursor(column: str, raw: object) -> None:
    with pytest.raises(ApiError) as info:
        cursor_value(_t.c[column], raw)
    assert (info.value.status, info.value.code, info.value.field) == (400, "invalid_cursor", "cursor")


def test_cursor_values_we_issue_are_accepted() -> None:
    when = "2025-01-01T00:00:00+00:00"
    assert cursor_value(_t.c.at, {"dt": when}) == datetime.fromisoformat(when)
    assert cursor_value(_t.c.n, 7) == 7
    assert cursor_value(_t.c.s, "T-1") == "T-1"


@pytest.mark.parametrize("cursor", ["!!", "A" * 5000, "W1tbW1tb" * 200, "bnVsbA"])
def test_garbage_cursors_are_invalid_cursor(cursor: str) -> None:
    with pytest.raises(ApiError) as info:
        decode_cursor(cursor)
    assert info.value.code == "invalid_cursor"
