"""``floorgate central node …|ca …|signing-key …``: the fleet's nodes and their keys, the fleet CA, central's own
signing key."""

from __future__ import annotations

import argparse

from central.cli.common import error_text, fail, open_database


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    node = sub.add_parser("node", help="enrol nodes and list them",
                          description="Register a node's public signing key at central, or list the nodes.")
    nsub = node.add_subparsers(dest="node_command", required=True, metavar="COMMAND")
    reg = nsub.add_parser(
        "register", help="register (or replace) a node's Ed25519 public key",
        description="Register NODE with the public key its agent printed (`floorgate edge enrol`). Batches of a "
        "node without a registered key are quarantined. When pki.dir of the central config holds the fleet CA's "
        "ca.key, the CA binds the key to NODE (a key-binding statement); a new key replaces the previous one, which "
        "stays in the node's key history (`node keys NODE`), and the same key registered before without the CA is "
        "bound from when it was registered. Without the CA key the key is registered UNBOUND: `verify-alibi` reports "
        "what it signs as untrusted_key and an ingest with a fleet CA quarantines it. Every registration is an "
        "audit-log row. Exit 1 naming the problem (2: the key cannot be read).")
    reg.add_argument("node_id", metavar="NODE")
    key = reg.add_mutually_exclusive_group(required=True)
    key.add_argument("--public-key", metavar="KEY", help="ed25519:<base64>, as printed by `floorgate edge enrol`")
    key.add_argument("--public-key-file", metavar="FILE", help="a file holding the key (text or PEM)")
    reg.add_argument("--config", required=True, metavar="CENTRAL_YAML")
    reg.add_argument("--out", metavar="DIR", help="with the fleet CA: also write DIR/NODE/bindings.json (every CA "
                     "statement about NODE's keys) and DIR/NODE/ca.crt; copy both beside the node's key so that "
                     "`floorgate edge alibi` anchors its keys in the CA")
    reg.set_defaults(func=_node_register)
    na = nsub.add_parser(
        "add", help="register a node and write its certificate and key bundle",
        description="Issue NODE a client certificate from the fleet CA (CN = NODE, the broker's user name for it) "
        "and a new Ed25519 signing key, register the key at central, and write the bundle: DIR/NODE/ca.crt, "
        "DIR/NODE/tls.crt, DIR/NODE/tls.key (0600), DIR/NODE/node.key (0600, the agent's key_file), "
        "DIR/NODE/central.pub (central's public signing key(s), which the agent trusts). A node that is "
        "enrolled already is refused unless --reissue, which revokes its old certificate (crl.pem is rewritten) "
        "and rotates its key: the old key stays in the node's history (`node keys NODE`) with the interval the CA "
        "signed, so what it signed still verifies. DIR/NODE/bindings.json holds every CA statement about the node's "
        "keys. Exit 1 naming the problem.")
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
        "or `node register` lets it in again. The signing key is ended with a revocation signed by the fleet CA.")
    nr.add_argument("node_id", metavar="NODE")
    nr.add_argument("--config", required=True, metavar="CENTRAL_YAML", help="central config with a pki section")
    nr.add_argument("--reason", help="why, kept with the certificates (e.g. 'device stolen')")
    nr.set_defaults(func=_node_revoke)
    ls = nsub.add_parser("list", help="list nodes with key fingerprint, key trust, last heartbeat and backlog",
                         description="List the nodes central knows, with their enrolment (enrolled, revoked, not "
                         "enrolled), key fingerprint, key history (how many keys, whether each is bound by the "
                         "fleet CA in pki.dir), certificate expiry and last heartbeat.")
    ls.add_argument("--config", required=True, metavar="CENTRAL_YAML")
    ls.set_defaults(func=_node_list)
    ks = nsub.add_parser(
        "keys", help="every signing key a node had, with its interval and whether the fleet CA vouches for it",
        description="Print every key NODE ever had (oldest first): fingerprint, the interval the fleet CA signed "
        "(from, until), how it ended (rotated, revoked), who registered it, and trusted / UNTRUSTED with the reason "
        "(not bound by the CA, a statement that does not verify, a row changed in the database, no CA in pki.dir). "
        "Exit 1 when any key is untrusted or the registered key is not the one the CA vouches for now.")
    ks.add_argument("node_id", metavar="NODE")
    ks.add_argument("--config", required=True, metavar="CENTRAL_YAML", help="central config (pki.dir: ca.crt)")
    ks.set_defaults(func=_node_keys)

    _register_ca(sub)
    _register_signing_key(sub)


def _ca_for_register(config: str):  # type: ignore[no-untyped-def]
    """(the fleet CA or None, why there is none). The CA when pki.dir holds ca.key; PkiError when it is unusable."""
    from central.config import load_settings
    from central.fleet import pki

    settings = load_settings(config, check_files=False)
    if settings.pki is None:
        return None, f"{config} has no pki section"
    if not (settings.pki.dir / pki.CA_KEY).exists():
        return None, f"{settings.pki.dir / pki.CA_KEY} does not exist"
    return pki.load_ca(settings.pki.dir), None


def _node_register(args: argparse.Namespace) -> int:
    from pathlib import Path

    from sqlalchemy.exc import SQLAlchemyError

    from central.fleet import pki
    from central.fleet.nodes import node_statements, register_key, write_bindings
    from sync.errors import SyncError

    text = args.public_key
    if args.public_key_file:
        try:
            text = Path(args.public_key_file).read_text(encoding="utf-8")
        except OSError as exc:
            print(f"floorgate: {args.public_key_file}: cannot read: {exc.strerror}")
            return 2
    try:
        ca, no_ca = _ca_for_register(args.config)
    except pki.PkiError as exc:
        return fail(f"node {args.node_id}: fleet CA: {exc}")
    if args.out and ca is None:
        return fail(f"node {args.node_id}: --out writes the fleet CA's statements, but there is no CA key ({no_ca})")
    engine, sessions = open_database(args.config)
    try:
        change = register_key(sessions, args.node_id, text, ca=ca, actor="cli:node-register")
        if args.out:
            write_bindings(Path(args.out) / args.node_id, ca, node_statements(sessions, args.node_id))
    except SyncError as exc:
        print(f"floorgate: node {args.node_id}: public key: {exc}")
        return 2
    except (pki.PkiError, SQLAlchemyError) as exc:
        return fail(f"node {args.node_id}: {error_text(exc)}")
    finally:
        engine.dispose()
    fp = change.fingerprint
    if change.action == "unchanged":
        print(f"node {args.node_id} registered, key fingerprint {fp} (unchanged: registered already)")
    elif change.action == "bind":
        print(f"node {args.node_id} registered, key fingerprint {fp}: bound by the fleet CA from "
              f"{change.valid_from:%Y-%m-%d %H:%M:%S} UTC, when central registered it")
    else:
        print(f"node {args.node_id} registered, key fingerprint {fp}"
              f"{f' (previous key {change.previous} replaced, kept in its history)' if change.previous else ''}"
              f"{', bound by the fleet CA' if change.bound else ''}")
    if not change.bound:
        import sys

        print(f"floorgate: WARNING: node {args.node_id}'s key {fp} is NOT bound by the fleet CA ({no_ca}): "
              "`floorgate central verify-alibi` reports what it signs as untrusted_key, and an ingest with a fleet "
              "CA (pki.dir) quarantines its batches. Register it again with a central config whose pki.dir holds "
              "ca.key to bind it.", file=sys.stderr)
    if args.out:
        print(f"wrote {Path(args.out) / args.node_id}/bindings.json and ca.crt: copy them beside the node's key")
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


def _ca_cert_of(config: str):  # type: ignore[no-untyped-def]
    """The fleet CA certificate of ``config`` (None without pki); CaCertError when it cannot be read."""
    from central.config import load_settings
    from central.fleet.keys import load_ca_cert

    settings = load_settings(config, check_files=False)
    return load_ca_cert(settings.pki.dir if settings.pki else None)


def _key_summary(history, node) -> str:  # type: ignore[no-untyped-def]
    from central.fleet.keys import current_key_problem

    n, bad = len(history.rows), len(history.untrusted)
    text = f"{n} key{'s' if n != 1 else ''}"
    if bad:
        return f"{text}, {bad} UNTRUSTED"
    if current_key_problem(node, history):
        return f"{text}, CURRENT UNTRUSTED"
    return f"{text}, trusted" if n else "-"


def _node_list(args: argparse.Namespace) -> int:
    from central.fleet.keys import CaCertError, key_history
    from central.fleet.nodes import identities, list_nodes

    no_ca = None
    try:
        ca_cert = _ca_cert_of(args.config)
    except CaCertError as exc:  # the list is still useful: key trust is shown as untrusted, and why
        ca_cert, no_ca = None, str(exc)
    engine, sessions = open_database(args.config)
    try:
        nodes = list_nodes(sessions)
        ids = identities(sessions, nodes)
        with sessions() as session:
            histories = {n.node_id: key_history(session, n.node_id, ca_cert) for n in nodes}
    finally:
        engine.dispose()
    print(f"{'node':20} {'status':12} {'key':17} {'key history':22} {'cert until':10} {'last heartbeat':26} "
          f"{'version':8} {'skew s':>7}  backlog / alarms")
    for n in nodes:
        hb = n.heartbeat or {}
        backlog = " ".join(f"{s}={v.get('pending')}" for s, v in (hb.get("streams") or {}).items())
        alarms = "; ".join(hb.get("alarms") or [])
        ident = ids[n.node_id]
        until = f"{ident.cert_not_after:%Y-%m-%d}" if ident.cert_not_after else "-"
        key = n.key_fingerprint or ("REVOKED" if ident.status == "revoked" else "NOT ENROLLED")
        keys = _key_summary(histories[n.node_id], n)
        print(f"{n.node_id:20} {ident.status:12} {key:17} {keys:22} {until:10} {n.last_heartbeat_at or '-'!s:26} "
              f"{n.software_version or '-':8} {n.clock_skew_s if n.clock_skew_s is not None else '-':>7}  "
              f"{backlog} {alarms}{'  CLOCK: ' + n.clock_flag if n.clock_flag else ''}")
    if ca_cert is None:
        print(f"no fleet CA ({no_ca or 'no pki.dir in the config'}): no key can be anchored, every key is untrusted")
    return 0


def _node_keys(args: argparse.Namespace) -> int:
    from datetime import datetime

    from sqlalchemy.exc import SQLAlchemyError

    from central.db.models import Node
    from central.db.types import utc_from_ns
    from central.fleet.keys import CaCertError, current_key_problem, key_history

    try:
        ca_cert = _ca_cert_of(args.config)
    except CaCertError as exc:
        return fail(str(exc))
    engine, sessions = open_database(args.config)
    try:
        with sessions() as session:
            node = session.get(Node, args.node_id)
            history = key_history(session, args.node_id, ca_cert)
    except SQLAlchemyError as exc:
        return fail(f"node {args.node_id}: {error_text(exc)}")
    finally:
        engine.dispose()
    if node is None and not history.rows:
        return fail(f"node {args.node_id} is not known at central (`floorgate central node list`)")

    def when(t: datetime | None) -> str:
        return f"{t:%Y-%m-%d %H:%M:%S}" if t is not None else "-"

    print(f"node {args.node_id}: {len(history.rows)} key(s); registered now: "
          f"{node.key_fingerprint if node is not None and node.public_key else 'none'}")
    print(f"{'fingerprint':17} {'valid from (UTC)':19} {'until (UTC)':19} {'end':8} {'registered by':18} trust")
    for row in history.rows:
        p = row.period
        if p is not None:
            start, until = utc_from_ns(p.valid_from_ns), (utc_from_ns(p.valid_until_ns)
                                                          if p.valid_until_ns is not None else None)
            end, trust = p.end or "-", "trusted (bound by the fleet CA)"
        else:
            start, until, end = row.valid_from, row.valid_until, row.end_reason or "-"
            trust = f"UNTRUSTED: {row.why}"
        print(f"{row.fingerprint:17} {when(start):19} {when(until):19} {end:8} {row.registered_by[:18]:18} {trust}")
        print(f"  {row.public_key}")
    problem = current_key_problem(node, history)
    if problem:
        print(f"UNTRUSTED: {problem}")
    if ca_cert is None:
        print("no fleet CA (pki.dir) in the config: no key can be anchored")
    return 1 if history.untrusted or problem else 0


def _node_add(args: argparse.Namespace) -> int:
    from pathlib import Path

    from central.fleet.nodes import add_node
    from sync.errors import SyncError

    try:
        central_keys = _central_keys(args.config)
    except SyncError as exc:
        return fail(f"central signing key: {exc}")
    done = _with_ca(args.config, lambda ca, sessions, conf: add_node(
        sessions, ca, args.node_id, Path(args.out), site=args.site, days=args.days or conf.cert_days,
        reissue=args.reissue, crl_days=conf.crl_days, central_keys=central_keys))
    if done is None:
        return 1
    ca, _, bundle = done
    print(f"node {bundle.node_id} added: bundle {bundle.directory} (ca.crt, tls.crt, tls.key, node.key, central.pub, "
          "bindings.json)")
    print(f"certificate serial {bundle.serial}, SHA-256 {bundle.cert_fingerprint}, valid until "
          f"{bundle.not_after:%Y-%m-%d}")
    print(f"signing key fingerprint {bundle.key_fingerprint} (registered, bound by the fleet CA"
          f"{'; the previous key stays in its history' if bundle.revoked or args.reissue else ''})")
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
          f"{result.key_removed or 'none'} removed and revoked by the fleet CA (central quarantines what it sends)")
    print(f"{ca.crl_path} rewritten: deploy it to the broker and restart the broker (the Ansible broker role does "
          "both) to refuse its certificate")
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
        return fail(str(exc))
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
        fail(error_text(exc))
        return None


def _ca_init(args: argparse.Namespace) -> int:
    from sqlalchemy.exc import SQLAlchemyError

    from central.fleet import pki

    _, conf = _pki(args.config)
    try:
        ca = pki.init_ca(conf.dir, name=args.name, days=args.days, crl_days=conf.crl_days)
    except (pki.PkiError, SQLAlchemyError) as exc:
        return fail(error_text(exc))
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

    from central.fleet.nodes import list_certificates
    from central.fleet.pki import CRL_FILE, crl_next_update

    settings, conf = _pki(args.config)
    engine, sessions = _pki_sessions(settings)
    try:
        rows = list_certificates(sessions)
    except SQLAlchemyError as exc:
        return fail(error_text(exc))
    finally:
        engine.dispose()
    now = datetime.now(UTC)

    def left(until: datetime) -> str:
        days = (until - now).total_seconds() / 86400
        return f"EXPIRED {-days:.0f} days ago" if days < 0 else f"{days:.0f} days left"

    print(f"{'serial':41} {'kind':6} {'common name':24} {'not after':10}  status")
    for r in rows:
        na = r.not_after
        status = f"revoked {r.revoked_at:%Y-%m-%d} ({r.revoke_reason})" if r.revoked_at else f"valid, {left(na)}"
        print(f"{r.serial:41} {r.kind:6} {r.common_name:24} {na:%Y-%m-%d}  {status}")
    crl = conf.dir / CRL_FILE
    try:
        next_update = crl_next_update(crl)
    except (OSError, ValueError) as exc:
        return fail(f"{crl}: cannot read the CRL ({exc}); `floorgate central ca crl` writes it anew")
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
