"""Alert rules: conditions evaluated continuously, alert history in the database, notifications by webhook and e-mail.

    rules.py       what a rule is: its kinds, thresholds, subject globs and message template
    config.py      AlertSettings (``alerts:`` in central.yaml), the rules file (channels + rules), its loader
    observation.py Observation: what a rule sees of one subject (beyond its threshold, back within it, unknown)
    conditions.py  what each rule kind observes per subject (``observe``)
    tse.py         what the rule kind ``tse`` observes in the TSE transactions ``central.fiscal`` verified
    integrity.py   what the rule kind ``integrity`` observes: truncated chains (the nodes' signed heads,
                   ``central.fleet.heads``), keys the fleet CA did not bind, TSEs not confirmed
    engine.py      AlertEvaluator: every ``evaluate_every_s`` fire / resolve alert instances and notify;
                   ``firing_counts`` for Prometheus
    notify.py      the channels: webhook (JSON over HTTP) and e-mail (SMTP), secrets never logged

An alert instance is one row of ``alerts`` (rule + subject, firing until resolved); every notification sent,
failed or suppressed by the rate limit is a row of ``alert_notifications``. See README.md, "Alert rules".

Nothing is imported here: ``central.config`` imports ``central.alerts.config``, and the engine imports central's
database and metrics modules.
"""
