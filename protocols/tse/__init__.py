"""German fiscal TSE (KassenSichV; BSI TR-03151 / TR-03153): log messages, receipts, exports, drivers, verification.

    protocols/tse/
    ├── errors.py        TseError tree (TseUnavailable, TseNotReady, TseInvalidArgument, DerError, …)
    ├── der.py           the little DER the log messages need (TLV, INTEGER, OID), strict decoder
    ├── logmsg.py        the TR-03151 log message: encode / decode byte for byte, signed bytes
    ├── crypto.py        ecdsa-plain-SHA256 / -SHA384, plain r‖s signatures, public keys, serial = SHA-256(key)
    ├── processdata.py   processData of Kassenbeleg-V1 (five VAT buckets incl. §24, payments) build / parse
    ├── qr.py            the receipt QR code V0;…: build, parse, verify offline
    ├── tarexport.py     TAR export file names, info.csv, packing
    ├── verify_tar.py    verify a TAR export entry by entry
    ├── api.py           the driver interface (SE API): TseDriver, TseInfo, TransactionResult, ensure_ready
    ├── software.py      SoftwareTse — NOT CERTIFIED, for tests and demos only (key file, SQLite state)
    ├── fiskaly.py       fiskaly SIGN DE API v2 shapes: request bodies, replies, errors (the HTTP driver:
    │                    edge.pos.fiskaly)
    └── cli.py           ``floorgate tse verify|init|info|selftest|receipt|export``

Everything but ``software.py`` and ``cli.py`` is pure: bytes in, values out.
"""
