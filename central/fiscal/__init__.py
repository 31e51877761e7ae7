"""Fiscal records at central (KassenSichV): TSE-signed sales as the nodes sync them, verified and exported.

    central/fiscal/
    ├── records.py   a ``tse_transaction`` record → a ``TseTransaction`` row; ``BadTseRecord`` names the field
    ├── config.py    ``fiscal:`` of central.yaml: the TSEs trusted from their first sale
    ├── registry.py  the TSE registry: each TSE pinned with its key on first sight (signed with central's key,
    │                audited), confirmed or rejected by an admin; the anchor every transaction is verified with
    ├── verify.py    per row: the pinned key, signature, serial, QR code, times, total; per TSE: counters and
    │                transaction numbers (regressions, duplicates) — at apply time for each new row and its neighbours
    ├── sweep.py     every row again from scratch (``floorgate central verify-tse``): gaps, untrusted TSEs, the
    │                numbers the node's signed head names that central lacks (truncated), pinned TSEs with no rows
    └── exports.py   TAR exports of a TSE kept byte for byte as uploaded, verified on upload against their stated
                     range and compared with what central holds

The pure checks come from ``protocols.tse`` (log message, QR code, TAR verification); this package adds the
database; the alert rule kind ``tse`` (``central.alerts.tse``) reads what it verified. See README.md, "Fiscal
verification at central".
"""
