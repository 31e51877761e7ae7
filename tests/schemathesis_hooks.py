"""Hooks for the live schemathesis run of ``integration/test_api_fuzz.py`` (loaded by ``st`` through
``SCHEMATHESIS_HOOKS=tests.schemathesis_hooks``).

Two things only, both narrow:

- The run must not cut off its own credentials: a case that would revoke the run's API key (id in
  ``FLOORGATE_FUZZ_KEY_ID``) is skipped, or sent to a key id that does not exist. Every other key, user and
  record may be changed or deleted.
- ``positive_data_acceptance`` (ST202, "schema-valid request rejected") is told about the rules a JSON Schema cannot
  state, which the API refuses with its documented error: a cursor it did not issue (``invalid_cursor``), a
  reference to a row that does not exist (``invalid_reference``), a range too long for its buckets
  (``too_many_buckets``, ``invalid_range``), a TSE export that is not one (``invalid_tse_export``), units that do
  not match (``unit_mismatch``), a weak password, and cross-field or lookup rules of a route or validator
  (``invalid_request`` whose message is not one of pydantic's schema-level complaints: "price and currency go
  together", "not an IANA time zone", "tare takes no argument …"). A rejection that the schema *could* have stated —
  a type, a bound, a pattern, an unknown sort (``invalid_sort``), a value the database cannot store
  (``invalid_value``) — stays a failure. All other checks are untouched.
"""

from __future__ import annotations

import json
import os
from typing import Any

import schemathesis

BEYOND_SCHEMA = frozenset({"invalid_cursor", "invalid_reference", "too_many_buckets", "invalid_range",
                           "invalid_tse_export", "unit_mismatch", "weak_password"})
# pydantic's messages for what the schema states (type, bounds, pattern, required, extra keys)
SCHEMA_LEVEL = ("Input should", "String should", "Field required", "should have at", "Extra inputs",
                "List should", "Dictionary should", "Value should", "Tuple should", "Decimal input")


def _protected(case: Any) -> bool:
    """Whether ``case`` would change the run's own key (``POST /api/v1/api-keys/{key_id}/revoke`` …)."""
    key_id = os.environ.get("FLOORGATE_FUZZ_KEY_ID")
    params = case.path_parameters or {}
    return (key_id is not None and case.method.upper() not in ("GET", "HEAD", "OPTIONS") and "key_id" in params
            and str(params["key_id"]) == key_id)


@schemathesis.hook
def filter_case(context: Any, case: Any) -> bool:
    return not _protected(case)


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
    """The phases that do not filter (coverage, stateful links from a response): aim at a key that does not exist."""
    if _protected(case):
        case.path_parameters["key_id"] = 2**53 - 1


def _beyond_schema(response: Any) -> bool:
    if response.status_code not in (400, 422):
        return False
    try:
        error = json.loads(response.content)["error"]
        code, message = error["code"], str(error["message"])
    except (ValueError, KeyError, TypeError):
        return False
    if code in BEYOND_SCHEMA:
        return True
    return code == "invalid_request" and not any(phrase in message for phrase in SCHEMA_LEVEL)


@schemathesis.hook
def filter_failure(context: Any, failure: Any, case: Any, response: Any) -> bool:
    return not (type(failure).__name__ == "RejectedPositiveData" and _beyond_schema(response))
