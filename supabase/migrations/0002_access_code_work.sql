-- Smart locks: the background work that puts a session's code on its pod's Seam lock after
-- the session starts, and takes it off after the session ends. Idempotent, like 0001.
--
-- access_code_status: null for a code that is on no lock (or not yet); else Seam's status
-- of the code ('unset', 'setting', 'set', ...) once it exists, then ours: 'removed' (taken
-- off the lock), 'expired' (could not be taken off, and its window has passed), 'failed'
-- (could not be put on the lock: the session was ended without charge).

-- A lease, like the charge's: while it runs, one replica alone talks to Seam about the
-- session. After a failed attempt it also holds the next one back (the retry delay).
alter table pod_sessions add column if not exists access_code_locked_until timestamptz;
alter table pod_sessions add column if not exists access_code_attempts integer not null default 0;

-- Ended sessions whose code may still be on a lock: a few among every session ever held.
create index if not exists pod_sessions_codes_to_remove on pod_sessions (start_time)
    where end_time is not null
      and access_code_id is not null
      and access_code_status is distinct from 'removed'
      and access_code_status is distinct from 'expired';
