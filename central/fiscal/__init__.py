"""Fiscal records at central (KassenSichV): TSE-signed sales as the nodes sync them, verified, alerted and exported.

    central/fiscal/
    ├── records.py   a ``tse_transaction`` record → a ``TseTransaction`` row; ``BadTseRecord`` names the field
    ├── verify.py    per row: signature, serial, QR code, times, total; per TSE: counters and transaction numbers
    │                (gaps, regressions, duplicates) — at apply time for each new row and its neighbours, and as a
    │                sweep (``floorgate central verify-tse``)
    ├── alerts.py    what the alert rule kind ``tse`` observes: invalid transactions, gaps left open, TSE failures
    └── exports.py   TAR exports of a TSE kept byte for byte as uploaded, verified on upload

The pure checks come from ``protocols.tse`` (log message, QR code, TAR verification); this package adds the
database. See README.md, "Fiscal verification at central".
"""
