-- Expand step of name -> full_name: the old release keeps writing "name", the trigger copies it.
SET lock_timeout = '3s';

ALTER TABLE users ADD COLUMN full_name text;

CREATE OR REPLACE FUNCTION users_copy_name() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.full_name := coalesce(NEW.full_name, NEW.name);
    RETURN NEW;
END;
$$;

CREATE TRIGGER users_copy_name
    BEFORE INSERT OR UPDATE ON users
    FOR EACH ROW EXECUTE FUNCTION users_copy_name();
