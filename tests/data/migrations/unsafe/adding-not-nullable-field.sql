-- Every user must have an e-mail address from now on.
SET lock_timeout = '3s';

UPDATE users SET email = username || '@users.invalid' WHERE email IS NULL;

ALTER TABLE users ALTER COLUMN email SET NOT NULL;
