-- The tables the jobs write to, and the columns the ops layer adds to them.
--
-- A deployed database already has system_job_log and invariant_violations
-- (created by the platform's own migration); a fresh one gets them here in the
-- same shape, so every later file can rely on them. Columns are only ever
-- added, never renamed or removed: the deployed functions and the dashboard
-- read the same tables.

CREATE TABLE IF NOT EXISTS system_job_log (
    id                  uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    job_name            text NOT NULL,
    started_at          timestamptz NOT NULL DEFAULT now(),
    completed_at        timestamptz,
    status              text NOT NULL DEFAULT 'running',
    records_processed   integer DEFAULT 0,
    errors_encountered  integer DEFAULT 0,
    details             jsonb DEFAULT '{}'::jsonb,
    error_message       text,
    CONSTRAINT system_job_log_status_check
        CHECK (status IN ('running', 'completed', 'failed'))
);

CREATE TABLE IF NOT EXISTS invariant_violations (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    check_name       text NOT NULL,
    severity         text NOT NULL,
    violation_count  integer NOT NULL DEFAULT 0,
    sample_data      jsonb,
    detected_at      timestamptz NOT NULL DEFAULT now(),
    resolved_at      timestamptz,
    auto_resolved    boolean DEFAULT false,
    notes            text,
    CONSTRAINT invariant_violations_severity_check
        CHECK (severity IN ('critical', 'warning', 'info'))
);

-- The SQLSTATE of a failed run (manual 4.1 wants to tell a lock timeout from
-- a permission problem) and who started the run.
ALTER TABLE system_job_log ADD COLUMN IF NOT EXISTS sqlstate text;
ALTER TABLE system_job_log ADD COLUMN IF NOT EXISTS triggered_by text;

-- Ops-layer rows carry the check's id (INV-SEAT-001, ...), so they can be told
-- from the deployed rows (check_name = 'system_invariant_check'), and keep the
-- first detection in detected_at while last_seen_at follows the fault.
ALTER TABLE invariant_violations ADD COLUMN IF NOT EXISTS check_id text;
ALTER TABLE invariant_violations ADD COLUMN IF NOT EXISTS last_seen_at timestamptz;
ALTER TABLE invariant_violations ADD COLUMN IF NOT EXISTS resolved_by text;

-- Dashboard writes have no admin profile behind them: the operator's name and
-- their reason are recorded instead.
ALTER TABLE admin_audit_log ADD COLUMN IF NOT EXISTS operator text;
ALTER TABLE admin_audit_log ADD COLUMN IF NOT EXISTS note text;
