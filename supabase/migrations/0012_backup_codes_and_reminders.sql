-- Backup codes and the overstay reminder (issue 18).
--
-- A session whose code does not reach the lock (Seam says it failed, or it is still not set
-- CODE_FALLBACK_SECONDS after the start) gets a code from the lock's backup pool, kept on
-- the session. A backup code is handed to one session only: the unique index below decides,
-- whichever replica asks. A session gets one reminder e-mail before MAX_SESSION_MINUTES:
-- reminded_at is set once, in the transaction that queues it.

alter table pod_sessions add column if not exists backup_access_code_id text;
alter table pod_sessions add column if not exists backup_access_code text;
-- A lease, like access_code_locked_until: one replica at a time asks Seam for the backup.
alter table pod_sessions add column if not exists backup_locked_until timestamptz;
alter table pod_sessions add column if not exists backup_attempts integer not null default 0;
alter table pod_sessions add column if not exists reminded_at timestamptz;

create unique index if not exists pod_sessions_backup_code_once
    on pod_sessions (backup_access_code_id) where backup_access_code_id is not null;


-- Open sessions whose code is on Seam but not set that long after the start, with no backup
-- yet and no replica asking for one now. An array of ids, as qwip_list_access_code_work.
create or replace function qwip_list_backup_code_work(p_after_seconds integer, p_limit integer)
returns uuid[]
language sql
stable
set search_path = public
as $$
    select array(
        select id from pod_sessions
        where end_time is null
          and access_code_id is not null
          and backup_access_code_id is null
          and access_code_status is distinct from 'set'
          and access_code_status is distinct from 'failed'
          and start_time <= now() - make_interval(secs => p_after_seconds)
          and (backup_locked_until is null or backup_locked_until < now())
        order by start_time
        limit p_limit
    );
$$;


-- Take the lease on asking Seam for the session's backup code: this attempt's number, or
-- null while another replica asks, or once the session has a backup, has ended or was
-- given up on.
create or replace function qwip_claim_backup_code_work(p_session_id uuid, p_lease_seconds integer)
returns integer
language sql
set search_path = public
as $$
    update pod_sessions
    set backup_locked_until = now() + make_interval(secs => p_lease_seconds),
        backup_attempts = backup_attempts + 1
    where id = p_session_id
      and end_time is null
      and backup_access_code_id is null
      and access_code_status is distinct from 'failed'
      and (backup_locked_until is null or backup_locked_until < now())
    returning backup_attempts;
$$;


-- Keep the backup code Seam handed out for the session and queue its e-mail, once:
--   recorded   the session now has this backup code; its e-mail is queued
--   taken      another session has this backup code: it is not this one's
--   unchanged  the session has a backup already, has ended, or was given up on
create or replace function qwip_record_backup_code(
    p_session_id uuid,
    p_backup_access_code_id text,
    p_backup_access_code text,
    p_emails jsonb
)
returns text
language plpgsql
set search_path = public
as $$
begin
    begin
        update pod_sessions
        set backup_access_code_id = p_backup_access_code_id,
            backup_access_code = p_backup_access_code,
            backup_locked_until = null
        where id = p_session_id
          and end_time is null
          and backup_access_code_id is null
          and access_code_status is distinct from 'failed';
    exception when unique_violation then
        return 'taken';
    end;
    if not found then
        return 'unchanged';
    end if;
    perform qwip_queue_emails(p_emails);
    return 'recorded';
end;
$$;


-- No backup code for the session: it is given up on (ended without charge by the caller),
-- once, and only while it is open without a backup code.
create or replace function qwip_fail_access_code_without_backup(p_session_id uuid)
returns boolean
language sql
set search_path = public
as $$
    with failed as (
        update pod_sessions
        set access_code_status = 'failed'
        where id = p_session_id
          and end_time is null
          and backup_access_code_id is null
          and access_code_status is distinct from 'failed'
        returning 1
    )
    select exists (select 1 from failed);
$$;


-- The session's backup code, if it has one (no row otherwise).
create or replace function qwip_get_backup_code(p_session_id uuid)
returns table (backup_access_code_id text, backup_access_code text)
language sql
stable
set search_path = public
as $$
    select s.backup_access_code_id, s.backup_access_code
    from pod_sessions s
    where s.id = p_session_id and s.backup_access_code_id is not null;
$$;


-- Open sessions within p_before_minutes of MAX_SESSION_MINUTES that were not reminded.
create or replace function qwip_list_reminders_due(p_max_minutes integer, p_before_minutes integer)
returns uuid[]
language sql
stable
set search_path = public
as $$
    select array(
        select id from pod_sessions
        where end_time is null
          and reminded_at is null
          and start_time <= now() - make_interval(mins => p_max_minutes - p_before_minutes)
        order by start_time
        limit 100
    );
$$;


-- Mark the session reminded and queue its reminder, in one transaction: true for the one
-- caller that did (another replica's update waits for this one's, then finds it reminded).
create or replace function qwip_record_reminder(p_session_id uuid, p_emails jsonb)
returns boolean
language plpgsql
set search_path = public
as $$
begin
    update pod_sessions set reminded_at = now()
    where id = p_session_id and end_time is null and reminded_at is null;
    if not found then
        return false;
    end if;
    perform qwip_queue_emails(p_emails);
    return true;
end;
$$;


-- Only the service may call these, as with 0001's functions.
select qwip_service_only(array[
    'qwip_list_backup_code_work(integer, integer)',
    'qwip_claim_backup_code_work(uuid, integer)',
    'qwip_record_backup_code(uuid, text, text, jsonb)',
    'qwip_fail_access_code_without_backup(uuid)',
    'qwip_get_backup_code(uuid)',
    'qwip_list_reminders_due(integer, integer)',
    'qwip_record_reminder(uuid, jsonb)'
]);
