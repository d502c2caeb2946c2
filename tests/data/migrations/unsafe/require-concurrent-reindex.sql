-- The index bloated after the big cleanup job: rebuild it.
REINDEX INDEX orders_account_id_created_at_idx;
