-- Getting paid for an owed session, and no new booking while one is owed (issue 17).
-- A session whose charge failed is paid later on the pay page, on-session, by one
-- PaymentIntent per attempt (its idempotency key names the attempt): the session keeps the
-- attempt and its PaymentIntent, so every caller of the pay link gets the same one. The
-- card's Stripe fingerprint is kept too, so that a debt is found by the card as well as by
-- the e-mail address.

alter table pod_sessions add column if not exists recovery_attempt integer not null default 0;
alter table pod_sessions add column if not exists recovery_payment_intent_id text;
alter table pod_sessions add column if not exists card_fingerprint text;

-- What a booking asks before it starts: is anything owed by this address or this card?
create index if not exists pod_sessions_unpaid_email
    on pod_sessions (lower(user_email)) where payment_status in ('failed', 'requires_action');
create index if not exists pod_sessions_unpaid_card
    on pod_sessions (card_fingerprint) where payment_status in ('failed', 'requires_action');


-- The session's payment attempt and its PaymentIntent, {attempt, payment_intent_id}. With
-- p_after_attempt: the next attempt, made by the first caller still at that attempt (its
-- PaymentIntent forgotten); a caller that finds another attempt gets that one, so callers
-- racing each other share one attempt, hence one idempotency key, hence one PaymentIntent.
create or replace function qwip_begin_recovery(p_session_id uuid, p_after_attempt integer)
returns jsonb
language plpgsql
set search_path = public
as $$
declare
    v_session pod_sessions;
begin
    if p_after_attempt is not null then
        update pod_sessions
        set recovery_attempt = recovery_attempt + 1,
            recovery_payment_intent_id = null,
            updated_at = now()
        where id = p_session_id and recovery_attempt = p_after_attempt;
    end if;
    select * into v_session from pod_sessions where id = p_session_id;
    if not found then
        return null;
    end if;
    return jsonb_build_object(
        'attempt', v_session.recovery_attempt,
        'payment_intent_id', v_session.recovery_payment_intent_id
    );
end;
$$;


-- The PaymentIntent of an attempt, kept only while that attempt is the session's.
create or replace function qwip_record_recovery(
    p_session_id uuid,
    p_attempt integer,
    p_payment_intent_id text
)
returns void
language sql
set search_path = public
as $$
    update pod_sessions
    set recovery_payment_intent_id = p_payment_intent_id, updated_at = now()
    where id = p_session_id and recovery_attempt = p_attempt;
$$;


-- The card a session was booked with, by Stripe's fingerprint (the same card number has
-- the same fingerprint on every Customer).
create or replace function qwip_record_card_fingerprint(p_session_id uuid, p_fingerprint text)
returns void
language sql
set search_path = public
as $$
    update pod_sessions set card_fingerprint = p_fingerprint where id = p_session_id;
$$;


-- The oldest session still owed by this e-mail address (any case) or this card, or null.
create or replace function qwip_find_unpaid_session(p_email text, p_fingerprint text)
returns uuid
language sql
stable
set search_path = public
as $$
    select id from pod_sessions
    where payment_status in ('failed', 'requires_action')
      and (lower(user_email) = lower(p_email) or card_fingerprint = p_fingerprint)
    order by end_time
    limit 1;
$$;


select qwip_service_only(array[
    'qwip_begin_recovery(uuid,integer)',
    'qwip_record_recovery(uuid,integer,text)',
    'qwip_record_card_fingerprint(uuid,text)',
    'qwip_find_unpaid_session(text,text)'
]);
