-- Run by the postgres image once, when it initialises an empty data volume.
-- Temporal's databases (temporal, temporal_visibility) are created by the
-- temporal-schema service; this is hitl's store, kept in its own database so it
-- can be backed up, restored and migrated on its own schedule.
CREATE DATABASE hitl;
