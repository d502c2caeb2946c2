-- Sessions moved to Redis.
SET lock_timeout = '3s';

DROP TABLE IF EXISTS user_sessions;
