-- Issue 14: 0009 dropped events_lease_idx so that lease renewals would be HOT updates. Measured on the long run
-- (bench/longrun.py, a transaction holding vacuum back), that made the lease rescue walk every version of every
-- event that was ever running and that vacuum could not yet remove, through events_state_id_idx: 5.5-12.2 ms a
-- rescue instead of 0.7-1.3 ms, growing with the time vacuum is held back. With the index the rescue reads only
-- the leases that ran out (lease_until < now()). Renewals are rare (an attempt that waits for a worker longer than
-- a quarter of its lease), so their HOT-ness is the smaller price.
CREATE INDEX IF NOT EXISTS events_lease_idx ON events (lease_until) WHERE state = 'running';
