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


-- Sessions with lock work due: a code to put on the lock of an open session's pod, a code
-- still on a lock after its session ended, or a giving up that a replica left half-done
-- (the session still open, or ended but not settled). None whose lease or retry delay runs.
-- An array rather than a set of rows: a JSON array of ids over PostgREST too.
create or replace function qwip_list_access_code_work(p_limit integer)
returns uuid[]
language sql
stable
set search_path = public
as $$
    select array(
        select s.id
        from pod_sessions s join pods p on p.id = s.pod_id
        where (s.access_code_locked_until is null or s.access_code_locked_until < now())
          and (
              (s.end_time is null and s.access_code_id is null
               and s.access_code_status is null and p.seam_device_id is not null)
              or (s.end_time is not null and s.access_code_id is not null
                  and s.access_code_status is distinct from 'removed'
                  and s.access_code_status is distinct from 'expired')
              or (s.access_code_status = 'failed'
                  and (s.end_time is null or s.payment_status = 'pending'))
          )
        order by s.start_time
        limit p_limit
    );
$$;


-- Take the lease on a session's lock work: this attempt's number, counted in the database
-- so that replicas agree on it; null while another replica holds the lease or a retry
-- delay runs.
create or replace function qwip_claim_access_code_work(p_session_id uuid, p_lease_seconds integer)
returns integer
language sql
set search_path = public
as $$
    update pod_sessions
    set access_code_locked_until = now() + make_interval(secs => p_lease_seconds),
        access_code_attempts = access_code_attempts + 1
    where id = p_session_id
      and (access_code_locked_until is null or access_code_locked_until < now())
    returning access_code_attempts;
$$;


-- After a failed attempt the lease becomes the retry delay: no replica tries again sooner.
create or replace function qwip_retry_access_code_work(
    p_session_id uuid,
    p_retry_in_seconds double precision
)
returns void
language sql
set search_path = public
as $$
    update pod_sessions
    set access_code_locked_until = now() + make_interval(secs => p_retry_in_seconds)
    where id = p_session_id;
$$;


-- Keep the id of the code made on the lock, and free the lease. False if the session has a
-- code already, or was given up on meanwhile: that code must not be taken as its own.
create or replace function qwip_record_access_code(
    p_session_id uuid,
    p_access_code_id text,
    p_status text
)
returns boolean
language sql
set search_path = public
as $$
    with recorded as (
        update pod_sessions
        set access_code_id = p_access_code_id,
            access_code_status = p_status,
            access_code_attempts = 0,
            access_code_locked_until = null
        where id = p_session_id
          and access_code_id is null
          and access_code_status is distinct from 'failed'
        returning 1
    )
    select exists (select 1 from recorded);
$$;


-- A newer status of the session's code, read from Seam. A code taken off the lock (or past
-- its window) stays so: a late read must not put it back on the work list.
create or replace function qwip_update_access_code_status(
    p_session_id uuid,
    p_access_code_id text,
    p_status text
)
returns boolean
language sql
set search_path = public
as $$
    with updated as (
        update pod_sessions
        set access_code_status = p_status
        where id = p_session_id
          and access_code_id = p_access_code_id
          and access_code_status is distinct from 'removed'
          and access_code_status is distinct from 'expired'
        returning 1
    )
    select exists (select 1 from updated);
$$;


-- Give up putting the session's code on its lock: true for the one caller that did, and
-- only while the session is open with no code on the lock, so it is ended (and its
-- customer told) once.
create or replace function qwip_fail_access_code(p_session_id uuid)
returns boolean
language sql
set search_path = public
as $$
    with failed as (
        update pod_sessions
        set access_code_status = 'failed'
        where id = p_session_id
          and end_time is null
          and access_code_id is null
          and access_code_status is null
        returning 1
    )
    select exists (select 1 from failed);
$$;


-- Only the service may call these, as with 0001's functions.
select qwip_service_only(array[
    'qwip_list_access_code_work(integer)',
    'qwip_claim_access_code_work(uuid, integer)',
    'qwip_retry_access_code_work(uuid, double precision)',
    'qwip_record_access_code(uuid, text, text)',
    'qwip_update_access_code_status(uuid, text, text)',
    'qwip_fail_access_code(uuid)'
]);
