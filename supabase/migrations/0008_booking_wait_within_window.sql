-- The booking limit's wait is at most the window. now() is when the caller's transaction
-- began; a row recorded by a transaction that began later but took the key's lock first
-- is stamped after it, so its slot seemed to free a fraction of a second more than one
-- window away: Retry-After 601 s, "try again in 11 minutes" for a 10-minute window.
-- The same function otherwise; `create or replace` keeps its grants (service only).

create or replace function qwip_take_booking_slot(p_limits jsonb, p_window_seconds integer)
returns integer
language plpgsql
set search_path = public
as $$
declare
    v_window interval := make_interval(secs => p_window_seconds);
    v_key text;
    v_limit integer;
    v_count integer;
    v_frees_at timestamptz;
    v_wait integer := 0;
begin
    for v_key in select key from jsonb_each(p_limits) order by key loop
        perform pg_advisory_xact_lock(hashtextextended('qwip_booking:' || v_key, 0));
    end loop;

    -- A bounded sweep of rows past the window, so the table stays small.
    delete from booking_attempts
    where id in (
        select id from booking_attempts where created_at < now() - v_window limit 100
    );

    for v_key, v_limit in select key, value::integer from jsonb_each_text(p_limits) loop
        select count(*) into v_count
        from booking_attempts
        where key = v_key and created_at > now() - v_window;
        if v_count >= v_limit then
            -- The slot frees when the row that puts the count at the limit leaves the window.
            select created_at + v_window into v_frees_at
            from booking_attempts
            where key = v_key and created_at > now() - v_window
            order by created_at
            offset v_count - v_limit
            limit 1;
            -- At most the window: a row stamped by a transaction that began after this
            -- one (it took the lock first) is a fraction of a second "in the future".
            v_wait := greatest(
                v_wait,
                least(
                    p_window_seconds,
                    greatest(1, ceil(extract(epoch from (v_frees_at - now())))::integer)
                )
            );
        end if;
    end loop;
    if v_wait > 0 then
        return v_wait;
    end if;

    insert into booking_attempts (key) select key from jsonb_each(p_limits);
    return 0;
end;
$$;
