"""Fiscal records at central (KassenSichV): TSE-signed sales as the nodes sync them, verified and exported.

    central/fiscal/
    ├── records.py   a ``tse_transaction`` record → a ``TseTransaction`` row; ``BadTseRecord`` names the field
    ├── verify.py    per row: signature, serial, QR code, times, total; per TSE: counters and transaction numbers
    │                (gaps, regressions, duplicates) — at apply time for each new row and its neighbours, and as a
    │                sweep (``floorgate central verify-tse``)
    └── exports.py   TAR exports of a TSE kept byte for byte as uploaded, verified on upload

The pure checks come from ``protocols.tse`` (log message, QR code, TAR verification); this package adds the
database; the alert rule kind ``tse`` (``central.alerts.tse``) reads what it verified. See README.md, "Fiscal
verification at central".
"""
