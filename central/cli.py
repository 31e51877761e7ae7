"""``floorgate central …`` sub-commands: migrate, run, ingest, create-admin, node register|add|revoke|list,
ca init|server-cert|client-cert|crl|list|revoke, verify-alibi, verify-tse, quarantine prune."""

from __future__ import annotations

import argparse
import asyncio


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    central = subparsers.add_parser("central", help="the central service",
                                    description="Run or maintain the central service.")
    sub = central.add_subparsers(dest="central_command", required=True, metavar="COMMAND")

    def add(name: str, help_: str, description: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=description)
        p.add_argument("--config", required=True, metavar="CENTRAL_YAML",
                       help="central config file (see firmware-config/examples/central.yaml)")
        return p

    m = add("migrate", "create or upgrade the database schema (Alembic)",
            "Apply the database migrations up to --revision (default: head); --downgrade goes back to it.")
    m.add_argument("--revision", default="head", help="target revision (default: head)")
    m.add_argument("--downgrade", action="store_true", help="downgrade to --revision instead (e.g. base)")
    m.set_defaults(func=_migrate)
    r = add("run", "serve the API and ingest batches from the broker",
            "Run the REST API (with /docs and /health) and the MQTT ingest in one process until SIGINT/SIGTERM.")
    r.set_defaults(func=_run)
    i = add("ingest", "ingest batches only (no API)",
            "Run only the MQTT ingest consumer; start several with distinct --client-id to share the load.")
    i.add_argument("--client-id", help="MQTT client id of this worker (default: from the config)")
    i.set_defaults(func=_ingest)
    i.add_argument("--share-group", help="MQTT 5 shared subscription group (overrides ingest.share_group)")
    i.add_argument("--metrics-listen", metavar="HOST:PORT",
                   help="serve Prometheus /metrics of this worker there, without login (overrides "
                   "ingest.metrics_listen; e.g. 127.0.0.1:9464)")

    ca = add("create-admin", "create the first admin (or another one)",
             "Create a user with role admin. There is no default password anywhere: this is how the first person "
             "gets in. The password is asked for (twice) on a terminal, or read from stdin with --password-stdin.")
    ca.add_argument("--username", required=True, help="user name to log in with")
    ca.add_argument("--full-name", help="the person's name, for the audit log")
    ca.add_argument("--password-stdin", action="store_true", help="read the password from the first line of stdin")
    ca.set_defaults(func=_create_admin)

    va = add("verify-alibi", "re-check central's copy of a node's alibi mirror",
             "Walk central's copy of the node's alibi chain by entry number: each signature with the node's "
             "registered key, each body against its hash, the links (prev_hash) and the numbering; compare each "
             "entry with its weighing. Exit 0 when intact; exit 1 naming every entry that was altered, removed, "
             "inserted or reordered, and every weighing that differs from its signed entry; exit 2 for an unknown "
             "or not enrolled node.")
    va.add_argument("--node", required=True, metavar="NODE", help="the node's id")
    va.add_argument("--json", action="store_true", help="print the report as JSON")
    va.set_defaults(func=_verify_alibi)

    vt = add("verify-tse", "re-verify the TSE transactions and their sequence",
             "Re-check every synced transaction of one TSE (--tse) or of all: the signature with the TSE's public key, "
             "the serial, the QR code, the times and the total of each; per TSE the start counters along the "
             "transaction numbers (regressions), counters used twice, and gaps in the numbers. The results are "
             "stored on the rows (verified, verify_error, gap marks), as at ingest. Exit 0 when every transaction "
             "verifies and no number is missing; 1 naming each problem; 2 for a TSE without transactions. Run it "
             "from cron to re-check regularly.")
    vt.add_argument("--tse", metavar="SERIAL", help="the TSE's serial (hex SHA-256 of its public key); default: all")
    vt.add_argument("--json", action="store_true", help="print the report as JSON")
    vt.set_defaults(func=_verify_tse)

    node = sub.add_parser("node", help="enrol nodes and list them",
                          description="Register a node's public signing key at central, or list the nodes.")
    nsub = node.add_subparsers(dest="node_command", required=True, metavar="COMMAND")
    reg = nsub.add_parser("register", help="register (or replace) a node's Ed25519 public key",
                          description="Register NODE with the public key its agent printed (`floorgate edge enrol`). "
                          "Batches of a node without a registered key are quarantined.")
    reg.add_argument("node_id", metavar="NODE")
    key = reg.add_mutually_exclusive_group(required=True)
    key.add_argument("--public-key", metavar="KEY", help="ed25519:<base64>, as printed by `floorgate edge enrol`")
    key.add_argument("--public-key-file", metavar="FILE", help="a file holding the key (text or PEM)")
    reg.add_argument("--config", required=True, metavar="CENTRAL_YAML")
    reg.set_defaults(func=_node_register)
    na = nsub.add_parser(
        "add", help="register a node and write its certificate and key bundle",
        description="Issue NODE a client certificate from the fleet CA (CN = NODE, the broker's user name for it) "
        "and a new Ed25519 signing key, register the key at central, and write the bundle: DIR/NODE/ca.crt, "
        "DIR/NODE/tls.crt, DIR/NODE/tls.key (0600), DIR/NODE/node.key (0600, the agent's key_file), "
        "DIR/NODE/central.pub (central's public signing key(s), which the agent trusts). A node that is "
        "enrolled already is refused unless --reissue, which revokes its old certificate (crl.pem is rewritten) "
        "and replaces its key. Exit 1 naming the problem.")
    na.add_argument("node_id", metavar="NODE")
    na.add_argument("--config", required=True, metavar="CENTRAL_YAML", help="central config with a pki section")
    na.add_argument("--out", required=True, metavar="DIR", help="the bundle goes to DIR/NODE/")
    na.add_argument("--site", metavar="SITE", help="put the node under this site (its code or id)")
    na.add_argument("--days", type=int, metavar="N", help="validity of the certificate (default: pki.cert_days, 730)")
    na.add_argument("--reissue", action="store_true",
                    help="the node has a certificate or key already: revoke it and issue a new bundle")
    na.set_defaults(func=_node_add)
    nr = nsub.add_parser(
        "revoke", help="revoke a node's certificates and block its signing key",
        description="Mark every certificate of NODE revoked, rewrite crl.pem (deploy it to the broker and restart "
        "the broker: the Ansible broker role does both) and remove the node's signing key, so that central "
        "quarantines whatever the node sends from then on. `node list` shows it as revoked; `node add --reissue` "
        "or `node register` lets it in again.")
    nr.add_argument("node_id", metavar="NODE")
    nr.add_argument("--config", required=True, metavar="CENTRAL_YAML", help="central config with a pki section")
    nr.add_argument("--reason", help="why, kept with the certificates (e.g. 'device stolen')")
    nr.set_defaults(func=_node_revoke)
    ls = nsub.add_parser("list", help="list nodes with key fingerprint, last heartbeat and backlog",
                         description="List the nodes central knows, with their enrolment (enrolled, revoked, not "
                         "enrolled), key fingerprint, certificate expiry and last heartbeat.")
    ls.add_argument("--config", required=True, metavar="CENTRAL_YAML")
    ls.set_defaults(func=_node_list)

    _register_ca(sub)
    _register_signing_key(sub)
    _register_quarantine(sub)


def _register_quarantine(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    q = sub.add_parser("quarantine", help="maintain the ingest quarantine",
                       description="Maintain the ingest quarantine (messages central could not use).")
    qsub = q.add_subparsers(dest="quarantine_command", required=True, metavar="COMMAND")
    pr = qsub.add_parser(
        "prune", help="delete quarantine entries older than the retention",
        description="Delete the quarantine entries received more than --older-than days ago (default: "
        "ingest.quarantine_retention_days of the config, 30), then the oldest beyond ingest.quarantine_max_rows, "
        "and print how many were removed. A running ingest process does the same every "
        "ingest.quarantine_prune_every_s; this is for cron or for making room at once (--older-than 0 removes "
        "every entry).")
    pr.add_argument("--config", required=True, metavar="CENTRAL_YAML")
    pr.add_argument("--older-than", type=_days, metavar="DAYS",
                    help="age in days (a decimal number ≥ 0; default: ingest.quarantine_retention_days)")
    pr.set_defaults(func=_quarantine_prune)


def _days(text: str) -> float:
    try:
        days = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of days, got {text!r}") from None
    if not 0 <= days <= 36_500:  # also refuses nan and inf
        raise argparse.ArgumentTypeError(f"expected a number of days from 0 to 36500, got {text!r}")
    return days


def _quarantine_prune(args: argparse.Namespace) -> int:
    from datetime import timedelta

    from central.config import load_settings
    from central.db.engine import make_engine, make_session_factory
    from central.ingest.quarantine import prune_report

    settings = load_settings(args.config, check_files=False)
    days = settings.ingest.quarantine_retention_days if args.older_than is None else args.older_than
    engine = make_engine(settings.database_url)
    try:
        report = prune_report(make_session_factory(engine), timedelta(days=days),
                              max_rows=settings.ingest.quarantine_max_rows)
    finally:
        engine.dispose()
    print(f"removed {report.removed} quarantine entr{'y' if report.removed == 1 else 'ies'} received before "
          f"{report.cutoff:%Y-%m-%d %H:%M:%S} UTC (older than {days:g} day(s))")
    if report.beyond_max:
        print(f"removed {report.beyond_max} more, the oldest beyond ingest.quarantine_max_rows "
              f"({settings.ingest.quarantine_max_rows})")
    return 0


def _register_signing_key(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    sk = sub.add_parser(
        "signing-key", help="central's downlink signing key: show, new, activate",
        description="Central signs every ack, replay request and command with its own Ed25519 key "
        "(signing_key_file; default <pki.dir>/central-signing.key, else beside the config file); nodes trust the "
        "public keys in their central.pub. Rotation: `new` makes the next key, put both public keys (`show`) on "
        "every node, restart the agents, then `activate` and restart every central process.")
    ssub = sk.add_subparsers(dest="signing_key_command", required=True, metavar="COMMAND")
    for name, help_ in (("show", "print the public key(s) nodes must trust (the active key is made if missing)"),
                        ("new", "make the next key (rotation step 1)"),
                        ("activate", "the next key becomes the active one (restart every central process after)")):
        p = ssub.add_parser(name, help=help_, description=help_)
        p.add_argument("--config", required=True, metavar="CENTRAL_YAML")
        p.set_defaults(func=_signing_key)


def _central_keys(config: str) -> list[str]:
    """The public keys nodes must trust (active, and next during a rotation); makes the active key if missing."""
    from central.config import load_settings
    from central.fleet import signing_key

    settings = load_settings(config, check_files=False)
    return [k.public_key for k in signing_key.keys(signing_key.key_path(settings.signing_key_file))]


def _signing_key(args: argparse.Namespace) -> int:
    from central.config import load_settings
    from central.fleet import signing_key
    from sync.signing import SigningKeyError

    settings = load_settings(args.config, check_files=False)
    try:
        path = signing_key.key_path(settings.signing_key_file)
        if args.signing_key_command == "new":
            info = signing_key.new_next(path)
            print(f"next key {info.path} (fingerprint {info.fingerprint}): put both public keys below in every "
                  "node's central.pub, restart the agents, then `floorgate central signing-key activate`")
        elif args.signing_key_command == "activate":
            old, new = signing_key.activate(path)
            print(f"active key is now {new.fingerprint} ({new.path}); {old.fingerprint} retired to {old.path}. "
                  "Restart every central process (central run, central ingest); drop the old key from the nodes' "
                  "central.pub once they run with the new one")
        for info in signing_key.keys(path):
            print(f"central key {info.public_key}  {info.role} {info.fingerprint} {info.path}")
    except SigningKeyError as exc:
        return _fail(str(exc))
    return 0


def _register_ca(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    ca = sub.add_parser("ca", help="the fleet CA: init, server and client certificates, CRL",
                        description="Maintain the fleet's certificate authority in pki.dir of the central config "
                        "(ca.key, ca.crt, crl.pem). Node certificates are made by `floorgate central node add`.")
    csub = ca.add_subparsers(dest="ca_command", required=True, metavar="COMMAND")

    def add(name: str, help_: str, description: str) -> argparse.ArgumentParser:
        p = csub.add_parser(name, help=help_, description=description)
        p.add_argument("--config", required=True, metavar="CENTRAL_YAML", help="central config with a pki section")
        return p

    init = add("init", "create the fleet CA (refuses to overwrite one)",
               "Create ca.key (EC P-256, mode 0600), ca.crt (self-signed, CA:true, pathlen 0, keyCertSign + cRLSign) "
               "and an empty crl.pem in pki.dir. Refuses when a CA is there already: every certificate it issued "
               "would stop working.")
    init.add_argument("--name", default="floorgate fleet CA", help="the CA's common name")
    init.add_argument("--days", type=int, default=3650, metavar="N", help="validity (default 3650 days)")
    init.set_defaults(func=_ca_init)
    srv = add("server-cert", "issue the broker's server certificate",
              "Issue a server certificate (EKU serverAuth) for the broker with the names clients connect to as "
              "subjectAltName, and write DIR/server.crt, DIR/server.key (0600) and DIR/ca.crt.")
    srv.add_argument("--dns", action="append", default=[], metavar="NAME", help="a DNS name of the broker (repeat)")
    srv.add_argument("--ip", action="append", default=[], metavar="ADDRESS", help="an IP address of it (repeat)")
    srv.add_argument("--cn", help="common name (default: the first --dns or --ip)")
    srv.add_argument("--out", required=True, metavar="DIR", help="where the files go")
    srv.add_argument("--days", type=int, metavar="N", help="validity (default: pki.cert_days, 730)")
    srv.set_defaults(func=_ca_server_cert)
    cli = add("client-cert", "issue central's client certificate for the broker",
              "Issue the client certificate (EKU clientAuth) central connects to the broker with, and write "
              "DIR/tls.crt, DIR/tls.key (0600) and DIR/ca.crt; point broker.tls of the central config at them. The "
              "CN has a ':' so that it can never be a node id; give each central process that connects to the "
              "broker its own (--cn floorgate:ingest-2), and list them in the broker role's "
              "broker_central_identities.")
    cli.add_argument("--cn", default="floorgate:central", help="common name (default floorgate:central)")
    cli.add_argument("--out", required=True, metavar="DIR", help="where the files go")
    cli.add_argument("--days", type=int, metavar="N", help="validity (default: pki.cert_days, 730)")
    cli.set_defaults(func=_ca_client_cert)
    crl = add("crl", "rewrite crl.pem from the revoked certificates",
              "Write crl.pem anew from every revoked certificate, valid for --days. The broker refuses every "
              "client once its CRL has expired: run this regularly (e.g. monthly from cron) and deploy the file.")
    crl.add_argument("--days", type=int, metavar="N", help="validity (default: pki.crl_days, 365)")
    crl.set_defaults(func=_ca_crl)
    cls = add("list", "list the certificates the CA issued",
              "List every certificate issued: serial, kind, CN, expiry, and whether it was revoked.")
    cls.set_defaults(func=_ca_list)
    rv = add("revoke", "revoke a server or client certificate",
             "Revoke the certificate with SERIAL (hex, as `ca list` shows it) and rewrite crl.pem. Node "
             "certificates are revoked with `floorgate central node revoke NODE`.")
    rv.add_argument("serial", metavar="SERIAL")
    rv.add_argument("--reason", help="why, kept with the certificate")
    rv.set_defaults(func=_ca_revoke)


def _migrate(args: argparse.Namespace) -> int:
    from central.config import load_settings
    from central.db import migrate
    from central.db.engine import make_engine

    settings = load_settings(args.config, check_files=False)  # the broker's TLS files may not be there yet
    engine = make_engine(settings.database_url)
    if args.downgrade:
        migrate.downgrade(engine, args.revision)
    else:
        migrate.upgrade(engine, args.revision)
    print(f"database at revision {migrate.current_revision(engine)}")
    engine.dispose()
    return 0


def _run(args: argparse.Namespace) -> int:
    from central.config import load_settings
    from central.runner import Central, run_until_signal

    asyncio.run(run_until_signal(Central(load_settings(args.config))))
    return 0


def _ingest(args: argparse.Namespace) -> int:
    import sys

    from central.config import load_settings
    from central.runner import Central, run_until_signal

    settings = load_settings(args.config)
    overrides = {key: value for key, value in (("share_group", args.share_group),
                                               ("metrics_listen", args.metrics_listen)) if value}
    if overrides:
        from pydantic import ValidationError

        try:
            ingest = type(settings.ingest).model_validate({**settings.ingest.model_dump(), **overrides})
        except ValidationError as exc:
            for error in exc.errors():
                option = "--" + str(error["loc"][0]).replace("_", "-") if error["loc"] else "option"
                print(f"floorgate: {option}: {error['msg']} (got {error.get('input')!r})", file=sys.stderr)
            return 2
        settings = settings.model_copy(update={"ingest": ingest})
    asyncio.run(run_until_signal(Central(settings, with_api=False, client_id=args.client_id)))
    return 0


def _sessions(config: str):  # type: ignore[no-untyped-def]
    from central.config import load_settings
    from central.db.engine import make_engine, make_session_factory

    engine = make_engine(load_settings(config, check_files=False).database_url)  # no broker connection here
    return engine, make_session_factory(engine)


def _node_register(args: argparse.Namespace) -> int:
    from pathlib import Path

    from central.fleet.nodes import register_node
    from sync.errors import SyncError

    text = args.public_key
    if args.public_key_file:
        try:
            text = Path(args.public_key_file).read_text(encoding="utf-8")
        except OSError as exc:
            print(f"floorgate: {args.public_key_file}: cannot read: {exc.strerror}")
            return 2
    engine, sessions = _sessions(args.config)
    try:
        fp, replaced = register_node(sessions, args.node_id, text)
    except SyncError as exc:
        print(f"floorgate: node {args.node_id}: public key: {exc}")
        return 2
    finally:
        engine.dispose()
    print(f"node {args.node_id} registered, key fingerprint {fp}{' (previous key replaced)' if replaced else ''}")
    try:
        central_keys = _central_keys(args.config)
    except SyncError as exc:
        print(f"floorgate: central signing key: {exc}")
        return 2
    for text in central_keys:  # the node trusts these: `floorgate edge enrol --central-key …`
        print(f"central key {text}")
    print("on the node: floorgate edge enrol --config NODE_YAML " +
          " ".join(f"--central-key {k}" for k in central_keys))
    return 0


def _verify_alibi(args: argparse.Namespace) -> int:
    import json
    import sys

    from central.tickets.alibi import AlibiVerifyError, verify_chain

    engine, sessions = _sessions(args.config)
    try:
        report = verify_chain(sessions, args.node)
    except AlibiVerifyError as exc:
        print(f"floorgate: {exc.message}", file=sys.stderr)
        return 2
    finally:
        engine.dispose()
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        print(report.summary())
        for p in report.problems:
            print(f"  {p.kind:16} {p.message}")
    return 0 if report.ok else 1


def _verify_tse(args: argparse.Namespace) -> int:
    import json
    import sys

    from central.fiscal.verify import UnknownTse, sweep

    engine, sessions = _sessions(args.config)
    try:
        reports = sweep(sessions, args.tse)
    except UnknownTse as exc:
        print(f"floorgate: {exc}", file=sys.stderr)
        return 2
    finally:
        engine.dispose()
    if args.json:
        print(json.dumps([r.to_json() for r in reports], indent=2))
    else:
        for report in reports:
            print(report.summary())
            for finding in report.findings:
                print(f"  {finding.kind:10} {finding.message}")
        if not reports:
            print("no TSE transactions held")
    return 0 if all(r.ok for r in reports) else 1


def _node_list(args: argparse.Namespace) -> int:
    from central.fleet.nodes import identities, list_nodes

    engine, sessions = _sessions(args.config)
    try:
        nodes = list_nodes(sessions)
        ids = identities(sessions, nodes)
    finally:
        engine.dispose()
    print(f"{'node':20} {'status':12} {'key':17} {'cert until':10} {'last heartbeat':26} {'version':8} "
          f"{'skew s':>7}  backlog / alarms")
    for n in nodes:
        hb = n.heartbeat or {}
        backlog = " ".join(f"{s}={v.get('pending')}" for s, v in (hb.get("streams") or {}).items())
        alarms = "; ".join(hb.get("alarms") or [])
        ident = ids[n.node_id]
        until = f"{ident.cert_not_after:%Y-%m-%d}" if ident.cert_not_after else "-"
        key = n.key_fingerprint or ("REVOKED" if ident.status == "revoked" else "NOT ENROLLED")
        print(f"{n.node_id:20} {ident.status:12} {key:17} {until:10} {n.last_heartbeat_at or '-'!s:26} "
              f"{n.software_version or '-':8} {n.clock_skew_s if n.clock_skew_s is not None else '-':>7}  "
              f"{backlog} {alarms}{'  CLOCK: ' + n.clock_flag if n.clock_flag else ''}")
    return 0


# -- the fleet CA and node bundles -----------------------------------------------------------------------------------
def _pki(config: str):  # type: ignore[no-untyped-def]
    """Settings (TLS files not required: these commands make them), the pki section, and the CA unless ``ca init``."""
    from central.config import load_settings
    from sync.runtime.config import ConfigError

    settings = load_settings(config, check_files=False)
    if settings.pki is None:
        raise ConfigError(config, ["pki: not set; add `pki: {dir: /etc/floorgate/pki}` (the fleet CA's directory)"])
    return settings, settings.pki


def _pki_sessions(settings):  # type: ignore[no-untyped-def]
    from central.db.engine import make_engine, make_session_factory

    engine = make_engine(settings.database_url)
    return engine, make_session_factory(engine)


def _with_ca(config: str, work):  # type: ignore[no-untyped-def]
    """Load the fleet CA and open central's database, then ``work(ca, sessions, pki_settings)``. Returns
    ``(ca, pki_settings, result)``, or None after printing the error (CA files, node id, database) — exit 1."""
    from sqlalchemy.exc import SQLAlchemyError

    from central.fleet import pki
    from sync.errors import SyncError

    settings, conf = _pki(config)
    try:
        ca = pki.load_ca(conf.dir)
        engine, sessions = _pki_sessions(settings)
        try:
            return ca, conf, work(ca, sessions, conf)
        finally:
            engine.dispose()
    except (pki.PkiError, SyncError, SQLAlchemyError) as exc:
        _fail(_message(exc))
        return None


def _fail(message: str) -> int:
    import sys

    print(f"floorgate: {message}", file=sys.stderr)
    return 1


def _message(exc: Exception) -> str:
    from sqlalchemy.exc import SQLAlchemyError

    if isinstance(exc, SQLAlchemyError):
        orig = getattr(exc, "orig", None) or exc
        return f"database: {str(orig).splitlines()[0]} (has `floorgate central migrate` been run?)"
    return str(exc)


def _ca_init(args: argparse.Namespace) -> int:
    from sqlalchemy.exc import SQLAlchemyError

    from central.fleet import pki

    _, conf = _pki(args.config)
    try:
        ca = pki.init_ca(conf.dir, name=args.name, days=args.days, crl_days=conf.crl_days)
    except (pki.PkiError, SQLAlchemyError) as exc:
        return _fail(_message(exc))
    print(f"fleet CA created in {conf.dir}: {pki.CA_KEY} (keep it secret), {pki.CA_CERT}, {pki.CRL_FILE}")
    print(f"CA certificate SHA-256 {pki.fingerprint(ca.cert)}, valid until {ca.cert.not_valid_after_utc:%Y-%m-%d}")
    return 0


def _issue_service(args: argparse.Namespace, kind: str) -> int:
    from pathlib import Path

    from central.fleet import pki
    from central.fleet.nodes import issue_service_certificate

    dns, ips = (tuple(args.dns), tuple(args.ip)) if kind == "server" else ((), ())
    cn = args.cn or (dns[0] if dns else ips[0] if ips else "")

    def work(ca, sessions, conf):  # type: ignore[no-untyped-def]
        if kind == "server" and not cn:
            raise pki.PkiError("server certificate: give the broker's host name(s) with --dns and/or address(es) "
                               "with --ip (clients check the name they connect to against them)")
        return issue_service_certificate(sessions, ca, Path(args.out), kind=kind, common_name=cn,
                                         days=args.days or conf.cert_days, dns_names=dns, ip_addresses=ips)

    if (done := _with_ca(args.config, work)) is None:
        return 1
    issued = done[2]
    stem = "server" if kind == "server" else "tls"
    print(f"{kind} certificate for {cn!r} in {args.out}: {stem}.crt, {stem}.key (0600), ca.crt")
    print(f"serial {issued.serial_hex}, SHA-256 {issued.fingerprint}, valid until "
          f"{issued.cert.not_valid_after_utc:%Y-%m-%d}")
    return 0


def _ca_server_cert(args: argparse.Namespace) -> int:
    return _issue_service(args, "server")


def _ca_client_cert(args: argparse.Namespace) -> int:
    return _issue_service(args, "client")


def _ca_crl(args: argparse.Namespace) -> int:
    from central.fleet.nodes import rewrite_crl

    done = _with_ca(args.config, lambda ca, sessions, conf: rewrite_crl(sessions, ca, days=args.days or conf.crl_days))
    if done is None:
        return 1
    ca, conf, revoked = done
    print(f"{ca.crl_path} rewritten: {len(revoked)} revoked certificate(s), valid for "
          f"{args.days or conf.crl_days} days; deploy it to the broker and restart the broker")
    return 0


def _ca_list(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    from sqlalchemy.exc import SQLAlchemyError

    from central.db.values import utc
    from central.fleet.nodes import list_certificates
    from central.fleet.pki import CRL_FILE, crl_next_update

    settings, conf = _pki(args.config)
    engine, sessions = _pki_sessions(settings)
    try:
        rows = list_certificates(sessions)
    except SQLAlchemyError as exc:
        return _fail(_message(exc))
    finally:
        engine.dispose()
    now = datetime.now(UTC)

    def left(until: datetime) -> str:
        days = (until - now).total_seconds() / 86400
        return f"EXPIRED {-days:.0f} days ago" if days < 0 else f"{days:.0f} days left"

    print(f"{'serial':41} {'kind':6} {'common name':24} {'not after':10}  status")
    for r in rows:
        na = utc(r.not_after)
        status = f"revoked {r.revoked_at:%Y-%m-%d} ({r.revoke_reason})" if r.revoked_at else f"valid, {left(na)}"
        print(f"{r.serial:41} {r.kind:6} {r.common_name:24} {na:%Y-%m-%d}  {status}")
    crl = conf.dir / CRL_FILE
    try:
        next_update = crl_next_update(crl)
    except (OSError, ValueError) as exc:
        return _fail(f"{crl}: cannot read the CRL ({exc}); `floorgate central ca crl` writes it anew")
    print(f"{crl}: next update {next_update:%Y-%m-%d %H:%M} UTC, {left(next_update)} "
          "(the broker refuses every client after it: `floorgate central ca crl`)")
    return 0


def _ca_revoke(args: argparse.Namespace) -> int:
    from central.fleet.nodes import revoke_certificate

    done = _with_ca(args.config, lambda ca, sessions, conf: revoke_certificate(
        sessions, ca, args.serial, reason=args.reason, crl_days=conf.crl_days))
    if done is None:
        return 1
    ca, _, row = done
    print(f"{row.kind} certificate {row.serial} ({row.common_name}) revoked; {ca.crl_path} rewritten: deploy it to "
          "the broker and restart the broker")
    return 0


def _node_add(args: argparse.Namespace) -> int:
    from pathlib import Path

    from central.fleet.nodes import add_node
    from sync.errors import SyncError

    try:
        central_keys = _central_keys(args.config)
    except SyncError as exc:
        return _fail(f"central signing key: {exc}")
    done = _with_ca(args.config, lambda ca, sessions, conf: add_node(
        sessions, ca, args.node_id, Path(args.out), site=args.site, days=args.days or conf.cert_days,
        reissue=args.reissue, crl_days=conf.crl_days, central_keys=central_keys))
    if done is None:
        return 1
    ca, _, bundle = done
    print(f"node {bundle.node_id} added: bundle {bundle.directory} (ca.crt, tls.crt, tls.key, node.key, central.pub)")
    print(f"certificate serial {bundle.serial}, SHA-256 {bundle.cert_fingerprint}, valid until "
          f"{bundle.not_after:%Y-%m-%d}")
    print(f"signing key fingerprint {bundle.key_fingerprint} (registered)")
    if bundle.revoked:
        print(f"revoked the previous certificate(s) {', '.join(bundle.revoked)}; {ca.crl_path} rewritten: deploy "
              "it to the broker and restart the broker")
    return 0


def _node_revoke(args: argparse.Namespace) -> int:
    from central.fleet.nodes import revoke_node

    done = _with_ca(args.config, lambda ca, sessions, conf: revoke_node(
        sessions, ca, args.node_id, reason=args.reason, crl_days=conf.crl_days))
    if done is None:
        return 1
    ca, _, result = done
    if not result.serials and result.key_removed is None:
        print(f"node {args.node_id}: nothing left to revoke (revoked already); {ca.crl_path} rewritten")
        return 0
    print(f"node {args.node_id} revoked: certificate(s) {', '.join(result.serials) or 'none'}; signing key "
          f"{result.key_removed or 'none'} removed (central quarantines what it sends)")
    print(f"{ca.crl_path} rewritten: deploy it to the broker and restart the broker (the Ansible broker role does "
          "both) to refuse its certificate")
    return 0


def _create_admin(args: argparse.Namespace) -> int:
    import getpass
    import re
    import sys
    from datetime import UTC, datetime

    from sqlalchemy import select

    from central.api.routes.users import USERNAME
    from central.api.security import check_password_strength, hash_secret
    from central.db import audit
    from central.db.models import User

    if not re.match(USERNAME, args.username):
        print(f"floorgate: --username {args.username!r}: use 1-64 letters, digits, _ . @ -", file=sys.stderr)
        return 2
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        if not sys.stdin.isatty():
            print("floorgate: no terminal to ask for the password: use --password-stdin", file=sys.stderr)
            return 2
        password = getpass.getpass(f"password for {args.username}: ")
        if getpass.getpass("again: ") != password:
            print("floorgate: the two passwords differ", file=sys.stderr)
            return 2
    problem = check_password_strength(password)
    if problem:
        print(f"floorgate: password: {problem}", file=sys.stderr)
        return 2
    engine, sessions = _sessions(args.config)
    try:
        with sessions.begin() as session:
            if session.execute(select(User).where(User.username == args.username)).scalar_one_or_none():
                print(f"floorgate: user {args.username!r} exists already (change it through the API)",
                      file=sys.stderr)
                return 1
            now = datetime.now(UTC)
            user = User(username=args.username, password_hash=hash_secret(password), role="admin",
                        full_name=args.full_name, active=True, created_at=now, updated_at=now)
            session.add(user)
            session.flush()
            audit.record(session, "cli:create-admin", "create", "users", user.id, after=audit.snapshot(user))
    finally:
        engine.dispose()
    print(f"admin {args.username!r} created; log in at POST /api/v1/auth/token")
    return 0
