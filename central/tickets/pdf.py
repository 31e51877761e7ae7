"""Printable A4 PDFs (reportlab): a weighbridge ticket (Wägeschein) and a delivery note (Lieferschein).

    Mühle Hansen GmbH & Co. KG                       ┐ the issuer (tickets.issuer): company, address, VAT id —
    Deichstraße 4 · 21680 Stade · USt-IdNr. DE…      ┘ or "Aussteller nicht eingerichtet" when not configured
    Wägeschein T-2026-000017                         ┐
    Wareneingang · abgeschlossen                     │ header: number, direction, status
    Fahrzeug / Partner / … / Standort (+ address)    ┘ what the ticket is about, where it was weighed
    ┌──────────────┬──────────────┬──────────────┐
    │              │ 1. Wägung    │ 2. Wägung    │   date and time (local, zone shown), the scale by name (and
    │ …            │ …            │ …            │   node/device, S/N), its verification mark, weight as
    └──────────────┴──────────────┴──────────────┘   delivered with unit, instrument alibi id, floorgate alibi no.
                                                       with the first 16 hex digits of its entry's hash
    Brutto / Tara / Netto (berechnet)                  net by difference, marked calculated (or the instrument's
                                                       net of a preset-tare weighing: "von der Waage")
    Hinweise                                           notes of the pairing (unknown codes, …)
    ──────────────────────────────────────────────
    Messwerte aus frei programmierbarer Zusatzeinrichtung. …   the legal notice (devices.md §4.3), on every page

Every weight is printed as delivered (``views``: the instrument's own digits). A weighing whose instrument gives no
alibi id of its own (MT-SICS) names floorgate's alibi number and hash prefix in its place: something on the paper
always leads to the verified value (``floorgate central verify-alibi``). A cancelled ticket is stamped STORNIERT across
every page and says who cancelled it, when, and why. The delivery note lists every ticket with its number (both
weighings with times and alibi anchors, the net) and the total net of the complete ones per unit; cancelled ones are
listed, stamped, and not counted.

The font is Bitstream Vera (shipped with reportlab), embedded: umlauts and the rest of Latin-1 print and extract
as text everywhere; characters beyond it print as a box.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from datetime import datetime
from xml.sax.saxutils import escape

from reportlab.lib import colors
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle
from reportlab.lib.units import mm
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.ttfonts import TTFont
from reportlab.pdfgen.canvas import Canvas
from reportlab.platypus import Flowable, KeepTogether, Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle

from central.tickets.config import Issuer
from central.tickets.documents import Paper
from central.tickets.views import DeliveryNoteView, TicketView, WeighingView, local_time, zone_of

LEGAL_NOTICE = ("Messwerte aus frei programmierbarer Zusatzeinrichtung. "
                "Die geeichten Messwerte können eingesehen werden.")
DIRECTIONS = {"in": "Wareneingang", "out": "Warenausgang"}
STATUSES = {"open": "offen", "complete": "abgeschlossen", "cancelled": "STORNIERT"}
PAIRED_BY = {"reference": "über die Referenz", "plate": "über das Kennzeichen",
             "preset_tare": "Einzelwägung mit Vorgabetara (PT)"}
CANCELLED_STAMP = "STORNIERT"
FONT, FONT_BOLD = "Vera", "VeraBd"
MARGIN = 18 * mm
NOTICE_SIZE_PT = 9.0
STAMP_SIZE_PT = 96.0
EMPTY = "—"
NO_ISSUER = "Aussteller nicht eingerichtet (central.yaml: tickets.issuer)"
NO_MARK = "nicht hinterlegt"
NO_INSTRUMENT_ALIBI = "keine; floorgate-Alibi:"
NET_CALCULATED = "Netto (berechnet)"
NET_INSTRUMENT = "Netto (von der Waage)"

_fonts_ready = False


def _register_fonts() -> None:
    global _fonts_ready
    if not _fonts_ready:  # reportlab finds its own Vera*.ttf on its TTF search path
        pdfmetrics.registerFont(TTFont(FONT, "Vera.ttf"))
        pdfmetrics.registerFont(TTFont(FONT_BOLD, "VeraBd.ttf"))
        pdfmetrics.registerFontFamily(FONT, normal=FONT, bold=FONT_BOLD, italic=FONT, boldItalic=FONT_BOLD)
        _fonts_ready = True


def _styles() -> dict[str, ParagraphStyle]:
    _register_fonts()
    base = ParagraphStyle("base", fontName=FONT, fontSize=9.5, leading=12)
    return {
        "base": base,
        "title": ParagraphStyle("title", parent=base, fontName=FONT_BOLD, fontSize=17, leading=21),
        "sub": ParagraphStyle("sub", parent=base, fontSize=11.5, leading=15),
        "h2": ParagraphStyle("h2", parent=base, fontName=FONT_BOLD, fontSize=11, leading=14, spaceBefore=6,
                             spaceAfter=3),
        "small": ParagraphStyle("small", parent=base, fontSize=8.5, leading=10.5),
        "net": ParagraphStyle("net", parent=base, fontName=FONT_BOLD, fontSize=14, leading=18),
        "cancel": ParagraphStyle("cancel", parent=base, fontName=FONT_BOLD, textColor=colors.HexColor("#b00020")),
        "issuer": ParagraphStyle("issuer", parent=base, fontName=FONT_BOLD, fontSize=12.5, leading=15.5),
    }


def _p(text: str | None, style: ParagraphStyle) -> Paragraph:
    return Paragraph(escape(text) if text else EMPTY, style)


def _lines(lines: Sequence[str | None], style: ParagraphStyle) -> Paragraph:
    """One paragraph of several lines (empty ones left out)."""
    return Paragraph("<br/>".join(escape(x) for x in lines if x) or EMPTY, style)


def _issuer(issuer: Issuer | None, st: dict[str, ParagraphStyle]) -> list[Flowable]:
    if issuer is None:
        return [_p(NO_ISSUER, st["cancel"]), Spacer(1, 3 * mm)]
    details = [*issuer.address, *([f"USt-IdNr. {issuer.vat_id}"] if issuer.vat_id else [])]
    out: list[Flowable] = [_p(issuer.name, st["issuer"])]
    if details:
        out.append(_p(" · ".join(details), st["small"]))
    return [*out, Spacer(1, 4 * mm)]


def _weight(value: str | None, unit: str) -> str:
    return f"{value} {unit}" if value is not None else EMPTY


def _page_decoration(cancelled: bool, footer: str) -> Callable[[Canvas, SimpleDocTemplate], None]:
    """Every page: the legal notice and the footer at the bottom; a STORNIERT stamp across a cancelled one."""

    def draw(canvas: Canvas, doc: SimpleDocTemplate) -> None:
        width, _height = A4
        canvas.saveState()
        if cancelled:
            canvas.setFillColor(colors.Color(0.75, 0, 0.1, alpha=0.22))
            canvas.setFont(FONT_BOLD, STAMP_SIZE_PT)
            canvas.translate(width / 2, A4[1] / 2)
            canvas.rotate(35)
            canvas.drawCentredString(0, 0, CANCELLED_STAMP)
            canvas.restoreState()
            canvas.saveState()
        usable = width - 2 * MARGIN
        size = min(NOTICE_SIZE_PT, NOTICE_SIZE_PT * usable / pdfmetrics.stringWidth(LEGAL_NOTICE, FONT_BOLD,
                                                                                        NOTICE_SIZE_PT))
        canvas.setStrokeColor(colors.black)
        canvas.setLineWidth(0.6)
        canvas.line(MARGIN, MARGIN + 17, width - MARGIN, MARGIN + 17)
        canvas.setFont(FONT_BOLD, size)
        canvas.drawString(MARGIN, MARGIN + 6, LEGAL_NOTICE)
        canvas.setFont(FONT, 7.5)
        canvas.drawString(MARGIN, MARGIN - 5, f"{footer} · Seite {doc.page}")
        canvas.restoreState()

    return draw


def _render(story: list[Flowable], *, title: str, cancelled: bool, footer: str) -> bytes:
    buf = io.BytesIO()
    doc = SimpleDocTemplate(buf, pagesize=A4, leftMargin=MARGIN, rightMargin=MARGIN, topMargin=MARGIN,
                            bottomMargin=MARGIN + 24, title=title, author="floorgate central",
                            subject="Wägeschein / Lieferschein", creator="floorgate")
    decorate = _page_decoration(cancelled, footer)
    doc.build(story, onFirstPage=decorate, onLaterPages=decorate)
    return buf.getvalue()


def _facts(rows: Sequence[tuple[str, str | None]], st: dict[str, ParagraphStyle], width: float) -> Table:
    table = Table([[_p(k, st["small"]), _p(v, st["base"])] for k, v in rows], colWidths=[38 * mm, width - 38 * mm],
                  hAlign="LEFT")
    table.setStyle(TableStyle([("VALIGN", (0, 0), (-1, -1), "TOP"), ("LEFTPADDING", (0, 0), (-1, -1), 0),
                               ("BOTTOMPADDING", (0, 0), (-1, -1), 2), ("TOPPADDING", (0, 0), (-1, -1), 1)]))
    return table


def _weighings_table(view: TicketView, paper: Paper, st: dict[str, ParagraphStyle], width: float) -> Table:
    preset = view.paired_by == "preset_tare"
    ws: list[WeighingView | None] = list(view.weighings)
    if preset:
        heads = ["Wägung"]
    else:
        ws += [None] * (2 - len(ws))  # an open ticket: the second weighing is still to come
        heads = [f"{n}. Wägung" for n in range(1, len(ws) + 1)]

    def row(label: str, get: Callable[[WeighingView], str | None]) -> list[Paragraph]:
        return [_p(label, st["small"]), *[_p(get(w) if w is not None else None, st["base"]) for w in ws]]

    def tare(w: WeighingView) -> str | None:
        return None if w.tare is None else _weight(w.tare, w.unit) + (" PT" if w.tare_preset else "")

    def scale(w: WeighingView | None) -> Paragraph:
        if w is None:
            return _p(None, st["base"])
        return _lines([paper.weighing(w.weighing_id).scale_name, w.scale], st["base"])

    def instrument_alibi(w: WeighingView | None) -> Paragraph:
        if w is None or w.instrument_alibi:
            return _p(w.instrument_alibi if w else None, st["base"])
        anchor = paper.weighing(w.weighing_id).anchor  # MT-SICS: no alibi id of the instrument, floorgate's instead
        return _lines([NO_INSTRUMENT_ALIBI, anchor], st["base"]) if anchor else _p(None, st["base"])

    rows = [
        [Paragraph("", st["small"]), *[_p(h, st["h2"]) for h in heads]],
        row("Datum / Uhrzeit", lambda w: w.weighed_at),
        [_p("Waage", st["small"]), *[scale(w) for w in ws]],
        row("Eichkennzeichen", lambda w: paper.weighing(w.weighing_id).verification_mark or NO_MARK),
        row("Gewicht (brutto)" if preset else "Gewicht", lambda w: _weight(w.gross, w.unit)),
    ]
    if any(w is not None and w.tare is not None for w in ws):
        rows += [row("Tara", tare), row("Netto (Waage)", lambda w: None if w.net is None else _weight(w.net, w.unit))]
    rows += [[_p("Alibi-Nr. der Waage", st["small"]), *[instrument_alibi(w) for w in ws]],
             row("Alibi floorgate (Nr. · Hash)", lambda w: paper.weighing(w.weighing_id).anchor)]
    first = 38 * mm
    rest = (width - first) / len(heads)
    table = Table(rows, colWidths=[first] + [rest] * len(heads), hAlign="LEFT")
    table.setStyle(TableStyle([
        ("GRID", (0, 0), (-1, -1), 0.4, colors.grey), ("VALIGN", (0, 0), (-1, -1), "TOP"),
        ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#eeeeee")),
    ]))
    return table


def _net_label(view: TicketView) -> str:
    """The net of a preset-tare ticket is the instrument's; every other one is calculated (gross − tare)."""
    return NET_INSTRUMENT if view.paired_by == "preset_tare" else NET_CALCULATED


def _result(view: TicketView, st: dict[str, ParagraphStyle], width: float) -> Table:
    preset = view.paired_by == "preset_tare"
    rows = [
        [_p("Brutto", st["small"]), _p(_weight(view.gross, view.unit), st["base"])],
        [_p("Tara" + (" (PT, Vorgabetara)" if preset else ""), st["small"]),
         _p(_weight(view.tare, view.unit), st["base"])],
        [_p(_net_label(view), st["h2"]), _p(_weight(view.net, view.unit), st["net"])],
    ]
    label = 54 * mm  # "Netto (von der Waage)" on one line
    table = Table(rows, colWidths=[label, width - label], hAlign="LEFT")
    table.setStyle(TableStyle([("VALIGN", (0, 0), (-1, -1), "MIDDLE"), ("LEFTPADDING", (0, 0), (-1, -1), 0),
                               ("LINEABOVE", (0, 2), (-1, 2), 0.8, colors.black)]))
    return table


def _direction(view: TicketView) -> str:
    text = DIRECTIONS.get(view.direction, view.direction)
    return f"{text} (vorläufig: die 2. Wägung entscheidet)" if view.direction_provisional else text


def _cancelled(view: TicketView, paper: Paper, *, counted_note: str = "") -> str:
    """``STORNIERT am <local time> von <actor> — Grund: <reason>``."""
    who = paper.cancellations.get(view.id)
    at = f" am {who.at}" if who is not None and who.at else ""
    by = f" von {who.by}" if who is not None and who.by else " (wer: nicht erfasst)"
    return f"STORNIERT{at}{by} — Grund: {view.cancel_reason or EMPTY}{counted_note}"


def _site(view: TicketView, paper: Paper) -> str | None:
    address = paper.site_address.get(view.id, ())
    return ", ".join([view.site, *address]) if view.site else None


def _ticket_story(view: TicketView, paper: Paper, st: dict[str, ParagraphStyle], width: float, *,
                  heading: str) -> list[Flowable]:
    story: list[Flowable] = [
        *_issuer(paper.issuer, st),
        _p(f"{heading} {view.number}", st["title"]),
        _p(f"{_direction(view)} · {STATUSES.get(view.status, view.status)}", st["sub"]),
        Spacer(1, 4 * mm),
        _facts([("Fahrzeug", view.vehicle), ("Partner", view.partner), ("Artikel", view.article),
                ("Charge", view.lot), ("Lieferschein", view.delivery_note), ("Referenz", view.reference),
                ("Standort", _site(view, paper)),
                ("Paarung", PAIRED_BY.get(view.paired_by or "", "von Hand")),
                ("Angelegt", view.created_at)], st, width),
        Spacer(1, 4 * mm),
        _weighings_table(view, paper, st, width),
        Spacer(1, 4 * mm),
        _result(view, st, width),
    ]
    if view.status == "cancelled":
        story += [Spacer(1, 3 * mm), _p(_cancelled(view, paper), st["cancel"])]
    if view.notes:
        story += [Spacer(1, 3 * mm), _p("Hinweise", st["h2"]),
                  *[_p(line, st["small"]) for line in view.notes.splitlines() if line.strip()]]
    return story


def _ticket_summary(view: TicketView, paper: Paper, st: dict[str, ParagraphStyle], width: float) -> list[Flowable]:
    """A ticket on a delivery note: what it is about in one line, both weighings, the net."""
    about = " · ".join(f"{k} {v}" for k, v in (("Fahrzeug", view.vehicle), ("Partner", view.partner),
                                                ("Artikel", view.article), ("Charge", view.lot),
                                                ("Referenz", view.reference)) if v)
    block: list[Flowable] = [
        _p(f"Wägeschein {view.number} · {_direction(view)} · {STATUSES.get(view.status, view.status)}", st["h2"]),
        _p(about or None, st["small"]), Spacer(1, 1.5 * mm), _weighings_table(view, paper, st, width),
        Spacer(1, 1.5 * mm),
    ]
    if view.paired_by == "preset_tare":
        block.append(_p(f"Brutto {_weight(view.gross, view.unit)} · Tara (PT) {_weight(view.tare, view.unit)}",
                        st["base"]))
    block.append(_p(f"{_net_label(view)} {_weight(view.net, view.unit)}", st["h2"]))
    if view.status == "cancelled":
        block.append(_p(_cancelled(view, paper, counted_note=" (nicht mitgezählt)"), st["cancel"]))
    return block


def ticket_pdf(view: TicketView, paper: Paper, *, printed_at: str) -> bytes:
    """The ticket as a one-page (rarely more) A4 PDF; ``paper`` (``documents.paper``) holds the issuer, the site's
    address, the scales, the alibi anchors and the cancellation; ``printed_at`` goes into the footer."""
    st = _styles()
    width = A4[0] - 2 * MARGIN
    story = _ticket_story(view, paper, st, width, heading="Wägeschein")
    return _render(story, title=f"Wägeschein {view.number}", cancelled=view.status == "cancelled",
                   footer=f"Wägeschein {view.number} · gedruckt {printed_at} · floorgate")


def delivery_note_pdf(view: DeliveryNoteView, paper: Paper, *, printed_at: str) -> bytes:
    """The delivery note: every ticket with its number, the total net of the complete ones per unit."""
    st = _styles()
    width = A4[0] - 2 * MARGIN
    totals = ", ".join(f"{total} {unit}" for unit, total in view.totals) or EMPTY
    counted = sum(1 for t in view.tickets if t.status == "complete")
    story: list[Flowable] = [
        *_issuer(paper.issuer, st),
        _p(f"Lieferschein {view.number}", st["title"]),
        _p(f"{len(view.tickets)} Wägeschein(e), davon {counted} abgeschlossen", st["sub"]),
        Spacer(1, 4 * mm),
        _facts([("Partner", "; ".join(view.partners) or None), ("Summe Netto", totals)], st, width),
        Spacer(1, 2 * mm),
    ]
    for ticket in view.tickets:
        story += [Spacer(1, 5 * mm), KeepTogether(_ticket_summary(ticket, paper, st, width))]
    story += [Spacer(1, 6 * mm), _p(f"Summe Netto (abgeschlossene Wägescheine): {totals}", st["net"])]
    if any(t.status == "cancelled" for t in view.tickets):
        story.append(_p("Stornierte Wägescheine sind aufgeführt, aber nicht mitgezählt.", st["small"]))
    return _render(story, title=f"Lieferschein {view.number}", cancelled=False,
                   footer=f"Lieferschein {view.number} · gedruckt {printed_at} · floorgate")


def printed_now(zone_name: str, now: datetime) -> str:
    """The footer's print time, local like the ticket's times."""
    return local_time(now, zone_of(None, zone_name))
