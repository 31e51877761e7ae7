"""A ticket read as the driver and the Eichamt inspector read it: the PDF from the API on real Postgres, rendered to a
PNG (pdfium, 300 dpi, thresholded like a scan) and read back by OCR (tesseract, Debian's ``tesseract-ocr`` with German
data; ``scripts/ensure-services.sh`` installs it — a missing tesseract fails the test, it never skips).

One vehicle, two weighbridges, mixed decimals: in on the entry bridge with 24560.0 kg (the instrument's alibi id
A-mill-01-1001), out on the exit bridge with 8420.5 kg (MT-SICS: no alibi id of the instrument). The paper must show
the issuer and the site, both scales by name with the verification mark where one is configured, every weight digit
for digit, the net 16139.5 kg marked "berechnet", the local times, and floorgate's alibi numbers with the first 16 hex
digits of their entries' hashes — in place of the instrument's alibi id on the MT-SICS side. Cancelled, it says who
cancelled it, when and why. The PDF's text layer is checked for the same, exactly.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pypdfium2 as pdfium
import pytest

from central.tickets.views import local_time
from tests.api_support import ApiHarness, build_api
from tests.paper_support import (
    ENTRY,
    EXIT,
    FIRST_LOCAL,
    GROSS,
    ISSUER,
    ISSUER_ADDRESS,
    NET,
    SECOND_LOCAL,
    SITE_ADDRESS,
    SITE_CODE,
    SITE_NAME,
    TARE,
    TICKETS,
    VAT_ID,
    site_and_node,
    weigh_mixed,
)
from tests.ticket_support import LEGAL_NOTICE

pytestmark = pytest.mark.integration

DPI = 300
HEX = "0123456789abcdef"


@pytest.fixture
def api(pg_url: str, tmp_path: Path) -> Iterator[ApiHarness]:
    yield from build_api(pg_url, {"kind": "sqlite", "path": str(tmp_path / "metrics.sqlite")}, tickets=TICKETS)


def _tesseract() -> str:
    found = shutil.which("tesseract")
    if found is None:  # never a skip: CI must read the ticket
        pytest.fail("tesseract is not installed: run scripts/ensure-services.sh (Debian: tesseract-ocr, "
                    "tesseract-ocr-deu)")
    langs = subprocess.run([found, "--list-langs"], capture_output=True, text=True, check=True).stdout.split()
    if "deu" not in langs or "eng" not in langs:
        pytest.fail(f"tesseract lacks German or English data ({langs}): run scripts/ensure-services.sh")
    return found


def _scan(pdf: bytes, png: Path) -> None:
    """Page 1 at ``DPI``, black and white like a scan (the light STORNIERT stamp drops out, the text stays)."""
    doc = pdfium.PdfDocument(pdf)
    try:
        image = doc[0].render(scale=DPI / 72).to_pil().convert("L").point(lambda v: 255 if v > 150 else 0)
        image.save(png)
    finally:
        doc.close()


def _ocr(png: Path, *args: str) -> str:
    out = subprocess.run([_tesseract(), str(png), "stdout", *args], capture_output=True, text=True, check=True)
    return " ".join(out.stdout.split())


def _read(api: ApiHarness, ticket_id: int, png: Path) -> tuple[str, str, str]:
    """The ticket as read: (OCR text in German, OCR of hex digits only — how one reads a hash —, text layer)."""
    r = api.client.get(f"/api/v1/tickets/{ticket_id}/pdf", headers=api.auth("viewer"))
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/pdf"
    _scan(r.content, png)
    doc = pdfium.PdfDocument(r.content)
    try:
        layer = " ".join(doc[0].get_textpage().get_text_range().split())
    finally:
        doc.close()
    return (_ocr(png, "-l", "deu"), _ocr(png, "-l", "eng", "-c", f"tessedit_char_whitelist={HEX} "), layer)


def _grouped(prefix: str) -> str:
    return " ".join(prefix[i:i + 4] for i in range(0, 16, 4))


def _assert_in(expected: str, text: str, what: str) -> None:
    assert expected in text, f"{what}: {expected!r} not in {text!r}"


def _fold(text: str) -> str:
    """An identifier as a person reads it where letters and digits look alike (0/O, 1/l/I): both sides folded."""
    return text.translate(str.maketrans("OoIl|", "00111"))


def test_the_ticket_reads_right_to_a_driver_and_an_inspector(api: ApiHarness, tmp_path: Path) -> None:
    site_and_node(api)
    t = weigh_mixed(api)
    assert (t["gross"], t["tare"], t["net"], t["status"]) == (GROSS, TARE, NET, "complete")
    (first_no, first_hash), (second_no, second_hash) = t["anchors"]

    text, hexes, layer = _read(api, t["id"], tmp_path / "ticket.png")
    for source, seen in (("OCR", text), ("text layer", layer)):
        for expected in (ISSUER, *ISSUER_ADDRESS, f"USt-IdNr. {VAT_ID}",  # the issuer
                         f"Wägeschein {t['number']}", SITE_CODE, SITE_NAME, *SITE_ADDRESS,  # the site
                         ENTRY[1], ENTRY[2], EXIT[1], "Eichkennzeichen", "nicht hinterlegt",  # the scales and marks
                         f"Gewicht {GROSS} kg {TARE} kg",  # digit for digit, side by side
                         f"Brutto {GROSS} kg", f"Tara {TARE} kg", f"Netto (berechnet) {NET} kg",
                         *(x.rpartition(" (")[0] for x in (FIRST_LOCAL, SECOND_LOCAL)), "(UTC+01:00)",  # Berlin time
                         "keine; floorgate-Alibi:",  # the MT-SICS side: floorgate's alibi in place of the instrument's
                         "Messwerte aus frei programmierbarer Zusatzeinrichtung. Die geeichten Messwerte können "
                         "eingesehen werden."):
            _assert_in(expected, seen, source)
        for expected in (f"mill-01/{ENTRY[0]}", f"mill-01/{EXIT[0]}", "A-mill-01-1001"):  # the entry bridge's alibi
            _assert_in(_fold(expected), _fold(seen), source)
        assert "STORNIERT" not in seen
        for rounded in ("16140", "8420 kg", "24560 kg"):  # nothing re-rounded, no zero dropped
            assert rounded not in seen, (source, rounded)
    for expected in (FIRST_LOCAL, SECOND_LOCAL, LEGAL_NOTICE, f"keine; floorgate-Alibi: {second_no} · "):
        _assert_in(expected, layer, "text layer")
    assert len(re.findall(r"A-mill-01-100\d", layer)) == 1  # the exit bridge has no instrument alibi id
    # floorgate's alibi numbers with the hash prefixes, as printed ("1 · 3fa2 b1c4 d5e6 f708"), read as hex digits
    for no, prefix in ((first_no, first_hash), (second_no, second_hash)):
        _assert_in(f"{no} · {_grouped(prefix)}", layer, "text layer")
        assert re.search(rf"\b{no}\s+{_grouped(prefix)}", hexes), (no, prefix, hexes)

    # cancelled: the inspector sees who, when and why
    r = api.client.post(f"/api/v1/tickets/{t['id']}/cancel", headers=api.auth("operator"),
                        json={"reason": "falscher LKW gewogen"})
    assert r.status_code == 200, r.text
    done: dict[str, Any] = r.json()
    who = f"user:{api.auth_names['operator']}"
    assert done["cancelled_by"] == who
    when = local_time(datetime.fromisoformat(done["cancelled_at"]), ZoneInfo("Europe/Berlin"))
    text, hexes, layer = _read(api, t["id"], tmp_path / "cancelled.png")
    for source, seen in (("OCR", text), ("text layer", layer)):
        for expected in ("STORNIERT am", when, "Grund: falscher LKW gewogen", ISSUER, f"Brutto {GROSS} kg",
                         f"Tara {TARE} kg", f"Netto (berechnet) {NET} kg"):
            _assert_in(expected, seen, source)
        _assert_in(_fold(f"von {who}"), _fold(seen), source)  # the operator's name holds hex digits
    _assert_in(f"STORNIERT am {when} von {who} — Grund: falscher LKW gewogen", layer, "text layer")
    for prefix in (first_hash, second_hash):
        _assert_in(_grouped(prefix), hexes, "OCR (hex)")
