-- Issue 15: punctual_events_updated joins the statement's new_rows to its old_rows. The planner knows nothing of a
-- transition table's size and plans for one row, so it chose a nested loop: every new row compared with every old
-- one, quadratic in the statement's rows. Measured (auto_explain): 104 ms of a 110 ms trigger for an outcome batch
-- of 1,000 events; about 7 ms for a claim of 256. With nested loops off for this function only, the join is hashed:
-- 15 to 23 ms for the same 1,000 rows, the trigger's whole work included.

ALTER FUNCTION punctual_events_updated() SET enable_nestloop = off;
