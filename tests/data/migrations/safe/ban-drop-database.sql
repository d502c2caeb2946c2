ALTER DATABASE app SET timezone TO 'UTC';
