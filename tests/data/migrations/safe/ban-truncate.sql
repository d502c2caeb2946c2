-- Purge only what is old, in batches, instead of TRUNCATE.
DO $$
DECLARE
    deleted integer;
BEGIN
    LOOP
        DELETE FROM audit_events
        WHERE id IN (
            SELECT id FROM audit_events
            WHERE created_at < now() - interval '2 years'
            LIMIT 10000
        );
        GET DIAGNOSTICS deleted = ROW_COUNT;
        EXIT WHEN deleted = 0;
    END LOOP;
END
$$;
