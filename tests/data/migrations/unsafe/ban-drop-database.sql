-- Clean up the database of the retired analytics service.
DROP DATABASE IF EXISTS analytics_legacy;
