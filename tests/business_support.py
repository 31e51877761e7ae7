"""Helpers for the tests of /api/v1's business resources: the one error shape, walking a list through its cursors,
reading the audit log."""

from __future__ import annotations

from typing import Any

from tests.api_support import ApiHarness


def failed(r: Any, status: int, code: str, field: str | None = None) -> dict[str, Any]:
    """The request failed with ``status`` and ``code`` in the one error shape ``{"error": {"code", "message",
    "field"}}`` (and ``field`` when given)."""
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "field"}
    assert body["error"]["code"] == code, body
    assert body["error"]["message"]
    if field is not None:
        assert body["error"]["field"] == field, body
    return body["error"]  # type: ignore[no-any-return]


def walk(api: ApiHarness, path: str, headers: dict[str, str], **params: Any) -> list[dict[str, Any]]:
    """Every item of a list, page by page through ``next_cursor`` (no page longer than ``limit``)."""
    items: list[dict[str, Any]] = []
    cursor = None
    for _ in range(100):
        r = api.client.get(path, headers=headers, params={**params, **({"cursor": cursor} if cursor else {})})
        assert r.status_code == 200, r.text
        body = r.json()
        assert len(body["items"]) <= params.get("limit", 50)
        items += body["items"]
        cursor = body["next_cursor"]
        if cursor is None:
            return items
    raise AssertionError("more than 100 pages")


def audit_entries(api: ApiHarness, **params: Any) -> list[dict[str, Any]]:
    """The audit log as an auditor reads it (one page, filters in ``params``)."""
    r = api.client.get("/api/v1/audit-log", headers=api.auth("auditor"), params=params)
    assert r.status_code == 200, r.text
    return r.json()["items"]  # type: ignore[no-any-return]
