"""Check floorgate's Grafana files: offline, and against the databases the dashboards query.

Offline (always):

- every dashboard validates against Grafana's JSON Schemas (``tests/data/grafana-jsonschema``, from the
  grafana-foundation-sdk): the dashboard, each panel, each panel's ``options`` and ``fieldConfig.defaults.custom``
  against its panel type's schema — a panel type without a schema is refused;
- the grid: every panel has a ``gridPos`` inside the 24 columns and no two panels overlap; panel ids and refIds are
  unique, dashboard uids too;
- every datasource a panel, target, variable or annotation names exists in ``provisioning/datasources`` with that
  uid and type; queries are raw code (SQL ``rawSql``, InfluxQL ``query`` with ``rawQuery``, PromQL ``expr``);
- every ``$variable`` a query uses is defined (before the variable that uses it), or a Grafana built-in;
- the alert rules and contact points in ``provisioning/alerting`` as Grafana reads the file (known keys only,
  durations, the condition and every expression naming an existing refId, datasources provisioned, no template
  variables), each rule validated against ``alerting.jsonschema.json`` in the shape Grafana stores it.

Live (for every datasource given a connection): each variable's query runs first (values chosen as a user would:
"All" where the variable offers it, else every value or the first), then every target of every panel and every
annotation, with the variables and the macros expanded the way Grafana expands them — ``$__timeFilter``,
``$__timeGroup[Alias]``, ``$__time``, ``$__timeFrom/To``, ``$__unixEpoch*`` for PostgreSQL; ``$timeFilter``,
``$__interval`` for InfluxQL; ``$__interval``, ``$__rate_interval``, ``$__range`` for PromQL; multi-value variables
as a quoted list (SQL) or an escaped regex ``(a|b)`` (InfluxQL, PromQL). Every query must run and return rows; a
SQL time series needs a ``time`` column and a number. A second pass with only the first value of each variable must
run without error. The alert rules' queries run over their relative time range and their reduce / threshold
expressions are evaluated (``Report.alerts``).

``--rules FILE`` compares the thresholds drawn in the panels with a floorgate alert-rules file: a panel whose
description names an "alert rule `NAME`" must draw that rule's value; every rule of the file with a value
(``reading`` above / below, ``node_backlog`` older_than_s, ``ingest_lag`` above_s) must be drawn somewhere.

    python -m tools.grafana_check                                    # offline
    python -m tools.grafana_check --postgres postgresql://grafana_reader@127.0.0.1/floorgate \\
        --influxdb http://127.0.0.1:8086 --influx-database floorgate --prometheus http://127.0.0.1:9090 \\
        --rules /etc/floorgate/alert-rules.yaml

Exit status: 0 no problem, 1 problems (each names the file, dashboard, panel, refId or variable), 2 bad usage.

From Python: ``tools.grafana_check.checker.check(**options) -> Report``. The modules, in the order a check runs:
``files`` (provisioning, dashboards, Grafana's JSON Schemas), ``context`` (what every check shares: datasources,
time range, the report), ``dashboards`` (offline checks of a dashboard), ``live`` (its variables and queries run),
``alerting`` (provisioned alert rules and contact points, evaluated live), ``thresholds`` (against a floorgate
alert-rules file); ``expansion`` is Grafana's date math, intervals, variable formats and SQL macros, ``runner`` runs
queries on PostgreSQL, InfluxDB and Prometheus, ``report`` holds the results, ``__main__`` the command line.
"""
