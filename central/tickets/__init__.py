"""Weighbridge tickets at central: a vehicle's first and second weighing paired into a ticket, and its printout.

    config.py   TicketSettings (``tickets:`` in central.yaml): the plate pairing window, the printout's time zone,
                the issuer, the sites' addresses, the scales' names and verification marks
    errors.py   TicketError and its subclasses
    rules.py    what the API and the pairing share: net by exact difference, direction, ticket numbers
    pairing.py  ``on_weighing``: called by ingest for every new weighing, in the same transaction
    cancellation.py  ``cancel``: a ticket cancelled for good, with who, when and why (audited)
    views.py    a ticket / delivery note with everything printed on it, read from the database
    documents.py  what only the paper carries: issuer, site address, scale name and mark, alibi anchors, who cancelled
    pdf.py      the A4 PDFs of a ticket and of a delivery note (reportlab)

Nothing is imported here: ``central.config`` imports ``central.tickets.config`` only.
"""
