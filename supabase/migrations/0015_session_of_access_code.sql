-- Seam's events about a code that did not reach the lock (failed to set, or delayed) name
-- the code, not the session. They lead to the lock worker's failure path, which tries a
-- backup code before it gives the session up; so the event must not mark the code failed
-- itself (a session whose code is failed gets no backup code): it only finds the session.

create or replace function qwip_session_of_access_code(p_access_code_id text)
returns uuid
language sql
stable
set search_path = public
as $$
    select id
    from pod_sessions
    where access_code_id = p_access_code_id
      and end_time is null
      and access_code_status is distinct from 'set'
      and access_code_status is distinct from 'failed'
      and access_code_status is distinct from 'removed'
      and access_code_status is distinct from 'expired'
    limit 1;
$$;

-- What the events called before: it marked the code failed on the spot.
drop function if exists qwip_fail_access_code_on_lock(text);

select qwip_service_only(array['qwip_session_of_access_code(text)']);
