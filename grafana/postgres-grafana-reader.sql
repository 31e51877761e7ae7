-- A read-only PostgreSQL role for Grafana's "floorgate PostgreSQL" data source.
-- Run it as the owner of central's tables, in central's database:
--     psql -d floorgate -f grafana/postgres-grafana-reader.sql
--     psql -d floorgate -c "ALTER ROLE grafana_reader PASSWORD '…'"      (then FLOORGATE_PG_PASSWORD for Grafana)
-- Running it again changes nothing. It grants exactly what the dashboards and alert rules read (the dashboard
-- tests run every query as this role): no users, API keys, audit log or login attempts, no quarantined payloads.

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'grafana_reader') THEN
        CREATE ROLE grafana_reader LOGIN;
    END IF;
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO grafana_reader', current_database());
END
$$;

ALTER ROLE grafana_reader SET default_transaction_read_only = on;
ALTER ROLE grafana_reader SET statement_timeout = '30s';

GRANT USAGE ON SCHEMA public TO grafana_reader;
GRANT SELECT ON sites, nodes, devices, weighings, tickets, articles, partners, lots, commands,
                tse_transactions, alerts, alert_notifications, ingest_marks
    TO grafana_reader;
GRANT SELECT (id, received_at, topic, node_id, reason) ON ingest_quarantine TO grafana_reader;
