-- A SQL-language function and a reporting view; the old view is replaced.
CREATE OR REPLACE FUNCTION account_balance(p_account bigint) RETURNS numeric
LANGUAGE sql STABLE AS $$
    SELECT coalesce(sum(amount_cents), 0) / 100.0
    FROM ledger_entries
    WHERE account_id = p_account;
$$;

DROP VIEW IF EXISTS account_balances;

CREATE VIEW account_balances AS
    SELECT a.id, a.name, account_balance(a.id) AS balance FROM accounts a;

DROP FUNCTION IF EXISTS legacy_balance(bigint);
