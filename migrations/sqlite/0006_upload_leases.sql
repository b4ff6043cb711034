-- Which request of which replica appends to or completes an upload session
-- now: a lease, taken and renewed by the replica streaming the body and
-- cleared when it is done, so that replicas serialize on a session without
-- holding a database connection for as long as a client takes to send its
-- body. `lease_until` is the database clock in milliseconds since the epoch;
-- an expired lease (its replica died) is free. Unused on SQLite (one
-- process: its in-process lock suffices), kept for the same schema.
ALTER TABLE uploads ADD COLUMN lease_owner TEXT;
ALTER TABLE uploads ADD COLUMN lease_until INTEGER;
