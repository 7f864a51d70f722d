-- A violation resolved by someone else first says who, when and why.
--
-- Two operators on the same incident can open the same violation: the second
-- one's resolve was refused with the server's raw timestamp in the sentence
-- and no way for the dashboard to show the first one's note. The refusal now
-- carries the row as it stands (with resolved_by, which the row's JSON also
-- gains everywhere it is written, the audit included), and its sentence gives
-- the time in UTC to the second. Everything else is 0109's function unchanged.

CREATE OR REPLACE FUNCTION ops_violation_json(p_violation invariant_violations)
RETURNS jsonb
LANGUAGE sql STABLE
AS $$
    SELECT jsonb_build_object(
        'id', p_violation.id, 'check_name', p_violation.check_name,
        'check_id', p_violation.check_id, 'severity', p_violation.severity,
        'violation_count', p_violation.violation_count,
        'detected_at', p_violation.detected_at,
        'last_seen_at', p_violation.last_seen_at,
        'resolved_at', p_violation.resolved_at,
        'resolved_by', p_violation.resolved_by,
        'notes', p_violation.notes)
$$;

CREATE OR REPLACE FUNCTION ops_resolve_violation(p_violation_id uuid,
                                                 p_operator text, p_note text)
RETURNS jsonb
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = public, pg_temp
SET lock_timeout = '5s'
AS $$
DECLARE
    v_refusal  jsonb := ops_refuse_unsigned(p_operator, p_note);
    v_row      invariant_violations%ROWTYPE;
    v_after    invariant_violations%ROWTYPE;
    v_count    integer;
    v_audit    uuid;
BEGIN
    IF v_refusal IS NOT NULL THEN
        RETURN v_refusal;
    END IF;
    PERFORM ops_apply_lock_timeout();
    SELECT * INTO v_row FROM invariant_violations WHERE id = p_violation_id FOR UPDATE;
    IF NOT FOUND THEN
        RETURN ops_refusal('not_found',
                           format('No violation has the id %s.', p_violation_id));
    END IF;
    IF v_row.resolved_at IS NOT NULL THEN
        RETURN ops_refusal('already_resolved', format(
                   'The violation was already resolved at %s UTC by %s.',
                   to_char(v_row.resolved_at AT TIME ZONE 'UTC',
                           'YYYY-MM-DD HH24:MI:SS'),
                   COALESCE(v_row.resolved_by, 'an unknown operator')))
               || jsonb_build_object('violation', ops_violation_json(v_row));
    END IF;
    v_count := ops_violation_current_count(v_row);

    UPDATE invariant_violations
       SET resolved_at = now(), notes = btrim(p_note), resolved_by = btrim(p_operator)
     WHERE id = p_violation_id
    RETURNING * INTO v_after;

    v_audit := ops_audit('violation_resolved', 'invariant_violation', p_violation_id,
                         p_operator, p_note,
                         jsonb_build_object(
                             'before', ops_violation_json(v_row),
                             'after', ops_violation_json(v_after),
                             'still_failing', v_count > 0,
                             'current_count', v_count));
    RETURN jsonb_build_object('success', true, 'violation_id', p_violation_id,
                              'still_failing', v_count > 0, 'audit_id', v_audit);
END
$$;
