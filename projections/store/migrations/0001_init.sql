-- Vigil projections, schema version 1.
--
-- Portable across MySQL 8, MariaDB 10.11 and SQLite: {{table_options}} becomes
-- the InnoDB/utf8mb4_bin options on MySQL and nothing on SQLite, and times are
-- DATETIME(3) in UTC (fixed-width text on SQLite). Every table is disposable
-- and rebuilt from the EVENTS stream, except notification_outbox and
-- subscriptions. Secondary indexes are created apart from their table so the
-- same text serves both stores; index names are unique across the database
-- (SQLite requires it).

-- Where each projection has got to in its stream: the stream sequence of the
-- last event it applied, written in the same transaction as the rows.
CREATE TABLE IF NOT EXISTS projection_checkpoints (
  name         VARCHAR(64)  NOT NULL,
  last_seq     BIGINT       NOT NULL DEFAULT 0,
  updated_at   DATETIME(3)  NULL,
  PRIMARY KEY (name)
) {{table_options}};

-- Messages a projection could not use (undecodable, or refused by it), kept
-- with the reason instead of blocking the projection.
CREATE TABLE IF NOT EXISTS projection_quarantine (
  projection     VARCHAR(64)   NOT NULL,
  stream_seq     BIGINT        NOT NULL,
  subject        VARCHAR(255)  NOT NULL,
  event_id       VARCHAR(64)   NULL,
  event_type     VARCHAR(128)  NULL,
  reason         VARCHAR(1024) NOT NULL,
  data           TEXT          NULL,
  quarantined_at DATETIME(3)   NOT NULL,
  PRIMARY KEY (projection, stream_seq)
) {{table_options}};

-- One row per site that has had an event or a check: its current state from
-- EVENTS, and its freshness (last check) from OBSERVATIONS, written in
-- coalesced batches.
CREATE TABLE IF NOT EXISTS site_status (
  site_id          VARCHAR(64)  NOT NULL,
  state            VARCHAR(16)  NOT NULL DEFAULT 'up',
  severity         SMALLINT     NOT NULL DEFAULT 0,
  since            DATETIME(3)  NULL,
  incident_id      VARCHAR(64)  NULL,
  maintenance      SMALLINT     NOT NULL DEFAULT 0,
  tls_kind         VARCHAR(16)  NULL,
  tls_severity     SMALLINT     NOT NULL DEFAULT 0,
  tls_at           DATETIME(3)  NULL,
  tls_not_after    DATETIME(3)  NULL,
  tls_event_seq    BIGINT       NOT NULL DEFAULT 0,
  last_event_id    VARCHAR(64)  NULL,
  last_event_kind  VARCHAR(16)  NULL,
  last_event_at    DATETIME(3)  NULL,
  last_event_seq   BIGINT       NOT NULL DEFAULT 0,
  last_checked_at  DATETIME(3)  NULL,
  last_class       VARCHAR(32)  NULL,
  last_status_code INT          NULL,
  last_response_ms INT          NULL,
  last_region      VARCHAR(32)  NULL,
  cert_not_after   DATETIME(3)  NULL,
  PRIMARY KEY (site_id)
) {{table_options}};
CREATE INDEX IF NOT EXISTS site_status_by_state ON site_status (state, site_id);
CREATE INDEX IF NOT EXISTS site_status_by_severity ON site_status (severity, site_id);

-- One row per incident, from its Seems Down to its Recovered.
CREATE TABLE IF NOT EXISTS incidents (
  incident_id        VARCHAR(64)  NOT NULL,
  site_id            VARCHAR(64)  NOT NULL,
  state              VARCHAR(16)  NOT NULL,
  opened_at          DATETIME(3)  NOT NULL,
  detected_at        DATETIME(3)  NULL,
  confirmed_at       DATETIME(3)  NULL,
  closed_at          DATETIME(3)  NULL,
  resolution         VARCHAR(16)  NULL,
  worst_severity     SMALLINT     NOT NULL DEFAULT 0,
  failure_class      VARCHAR(32)  NULL,
  failure_status     INT          NULL,
  region_votes       TEXT         NULL,
  single_region      SMALLINT     NOT NULL DEFAULT 0,
  maintenance        SMALLINT     NOT NULL DEFAULT 0,
  opened_event_id    VARCHAR(64)  NULL,
  confirmed_event_id VARCHAR(64)  NULL,
  closed_event_id    VARCHAR(64)  NULL,
  last_event_seq     BIGINT       NOT NULL DEFAULT 0,
  PRIMARY KEY (incident_id)
) {{table_options}};
CREATE INDEX IF NOT EXISTS incidents_by_site ON incidents (site_id, opened_at);
CREATE INDEX IF NOT EXISTS incidents_by_opened ON incidents (opened_at);

-- The uptime ledger: each incident's intervals, and the periods the monitor
-- itself could not tell (its primary region impaired). Rollups are computed
-- from these.
CREATE TABLE IF NOT EXISTS uptime_incidents (
  incident_id     VARCHAR(64)  NOT NULL,
  site_id         VARCHAR(64)  NOT NULL,
  started_at      DATETIME(3)  NOT NULL,
  confirmed_at    DATETIME(3)  NULL,
  closed_at       DATETIME(3)  NULL,
  resolution      VARCHAR(16)  NULL,
  maint_open      SMALLINT     NOT NULL DEFAULT 0,
  maint_confirmed SMALLINT     NOT NULL DEFAULT 0,
  last_event_seq  BIGINT       NOT NULL DEFAULT 0,
  PRIMARY KEY (incident_id)
) {{table_options}};
CREATE INDEX IF NOT EXISTS uptime_incidents_by_site ON uptime_incidents (site_id, started_at);
CREATE INDEX IF NOT EXISTS uptime_incidents_by_closed ON uptime_incidents (closed_at);

CREATE TABLE IF NOT EXISTS uptime_unknown (
  impairment_id  VARCHAR(64)  NOT NULL,
  region         VARCHAR(32)  NOT NULL,
  counts         SMALLINT     NOT NULL DEFAULT 1,
  started_at     DATETIME(3)  NOT NULL,
  ended_at       DATETIME(3)  NULL,
  recovered_event_id VARCHAR(64) NULL,
  last_event_seq BIGINT       NOT NULL DEFAULT 0,
  PRIMARY KEY (impairment_id)
) {{table_options}};
CREATE INDEX IF NOT EXISTS uptime_unknown_by_region ON uptime_unknown (region, ended_at);
CREATE INDEX IF NOT EXISTS uptime_unknown_by_start ON uptime_unknown (started_at);

-- Rollups per site and hour / day. The seconds columns are the ledger's
-- accounting (accounted = 1) for periods in which the site had an incident;
-- a row with accounted = 0 (or no row) means the site was up apart from the
-- fleet-wide unknown time in uptime_unknown_hourly/daily. checks, failures
-- and the response-time columns come from OBSERVATIONS (freshness applier).
CREATE TABLE IF NOT EXISTS uptime_hourly (
  site_id             VARCHAR(64)  NOT NULL,
  period_start        DATETIME(3)  NOT NULL,
  accounted           SMALLINT     NOT NULL DEFAULT 0,
  seconds_up          INT          NOT NULL DEFAULT 0,
  seconds_seems_down  INT          NOT NULL DEFAULT 0,
  seconds_down        INT          NOT NULL DEFAULT 0,
  seconds_unknown     INT          NOT NULL DEFAULT 0,
  seconds_maintenance INT          NOT NULL DEFAULT 0,
  checks              INT          NOT NULL DEFAULT 0,
  failures            INT          NOT NULL DEFAULT 0,
  rt_p50_ms           INT          NULL,
  rt_p95_ms           INT          NULL,
  rt_p99_ms           INT          NULL,
  rt_hist             TEXT         NULL,
  PRIMARY KEY (site_id, period_start)
) {{table_options}};
CREATE INDEX IF NOT EXISTS uptime_hourly_by_period ON uptime_hourly (period_start);

CREATE TABLE IF NOT EXISTS uptime_daily (
  site_id             VARCHAR(64)  NOT NULL,
  period_start        DATETIME(3)  NOT NULL,
  accounted           SMALLINT     NOT NULL DEFAULT 0,
  seconds_up          INT          NOT NULL DEFAULT 0,
  seconds_seems_down  INT          NOT NULL DEFAULT 0,
  seconds_down        INT          NOT NULL DEFAULT 0,
  seconds_unknown     INT          NOT NULL DEFAULT 0,
  seconds_maintenance INT          NOT NULL DEFAULT 0,
  checks              INT          NOT NULL DEFAULT 0,
  failures            INT          NOT NULL DEFAULT 0,
  rt_p50_ms           INT          NULL,
  rt_p95_ms           INT          NULL,
  rt_p99_ms           INT          NULL,
  rt_hist             TEXT         NULL,
  PRIMARY KEY (site_id, period_start)
) {{table_options}};
CREATE INDEX IF NOT EXISTS uptime_daily_by_period ON uptime_daily (period_start);

-- Fleet-wide unknown seconds per period (the monitor's own trouble), for
-- sites without an accounted row.
CREATE TABLE IF NOT EXISTS uptime_unknown_hourly (
  period_start DATETIME(3) NOT NULL,
  seconds      INT         NOT NULL DEFAULT 0,
  PRIMARY KEY (period_start)
) {{table_options}};

CREATE TABLE IF NOT EXISTS uptime_unknown_daily (
  period_start DATETIME(3) NOT NULL,
  seconds      INT         NOT NULL DEFAULT 0,
  PRIMARY KEY (period_start)
) {{table_options}};

-- Who is told about what. Configuration, not a projection: written by the API.
CREATE TABLE IF NOT EXISTS subscriptions (
  subscription_id         VARCHAR(64)   NOT NULL,
  name                    VARCHAR(255)  NOT NULL DEFAULT '',
  destination_kind        VARCHAR(16)   NOT NULL,
  destination             VARCHAR(2048) NOT NULL,
  site_filter             TEXT          NULL,
  label_filter            TEXT          NULL,
  min_severity            SMALLINT      NOT NULL DEFAULT 4,
  event_kinds             TEXT          NULL,
  suppress_in_maintenance SMALLINT      NOT NULL DEFAULT 1,
  enabled                 SMALLINT      NOT NULL DEFAULT 1,
  created_at              DATETIME(3)   NOT NULL,
  updated_at              DATETIME(3)   NOT NULL,
  PRIMARY KEY (subscription_id)
) {{table_options}};

-- One notification to deliver per (event, subscription), with its payload
-- frozen when the event was projected. Never rebuilt: rows are side effects.
CREATE TABLE IF NOT EXISTS notification_outbox (
  event_id         VARCHAR(64)   NOT NULL,
  subscription_id  VARCHAR(64)   NOT NULL,
  event_seq        BIGINT        NOT NULL,
  event_type       VARCHAR(128)  NOT NULL,
  event_kind       VARCHAR(32)   NOT NULL,
  site_id          VARCHAR(64)   NULL,
  incident_id      VARCHAR(64)   NULL,
  severity         SMALLINT      NOT NULL DEFAULT 0,
  destination_kind VARCHAR(16)   NOT NULL,
  destination      VARCHAR(2048) NOT NULL,
  payload          TEXT          NOT NULL,
  status           VARCHAR(16)   NOT NULL DEFAULT 'pending',
  attempts         INT           NOT NULL DEFAULT 0,
  next_attempt_at  DATETIME(3)   NOT NULL,
  last_error       VARCHAR(1024) NULL,
  last_status_code INT           NULL,
  created_at       DATETIME(3)   NOT NULL,
  delivered_at     DATETIME(3)   NULL,
  PRIMARY KEY (event_id, subscription_id)
) {{table_options}};
CREATE INDEX IF NOT EXISTS notification_outbox_due ON notification_outbox (status, next_attempt_at);
CREATE INDEX IF NOT EXISTS notification_outbox_by_incident ON notification_outbox (subscription_id, incident_id);
