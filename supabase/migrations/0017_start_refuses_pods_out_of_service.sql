-- A pod that went out of service between the card's setup and the session's start (the
-- operator's `pods disable`, or Seam's word that its lock is offline) no longer starts a
-- session: the start is refused as for a pod taken meanwhile, decided for good, with the
-- e-mail the caller gives (which says why), and a hold placed for it is released.
-- Idempotent, like the files before it.

-- 0007's start, whose claim of the pod also asks that it be in service.
create or replace function qwip_start_session_once(
    p_event_id text,
    p_event_type text,
    p_session_id uuid,
    p_setup_intent_id text,
    p_pod_id bigint,
    p_user_email text,
    p_customer_id text,
    p_payment_method text,
    p_access_code text,
    p_free_minutes integer,
    p_started_email jsonb,
    p_unavailable_email jsonb
)
returns jsonb
language plpgsql
set search_path = public
as $$
declare
    v_decided setup_intent_outcomes;
    v_existing uuid;
    v_pod pods;
    v_start timestamptz;
    v_hold card_holds;
begin
    if p_event_id is not null and not qwip_record_event(p_event_id, p_event_type) then
        return jsonb_build_object('outcome', 'duplicate');
    end if;

    perform pg_advisory_xact_lock(hashtextextended('qwip_start_session:' || p_setup_intent_id, 0));

    select * into v_decided from setup_intent_outcomes where setup_intent_id = p_setup_intent_id;
    if found then
        if v_decided.outcome = 'started' then
            return jsonb_build_object('outcome', 'existing', 'session_id', v_decided.session_id);
        end if;
        return jsonb_build_object('outcome', 'refused_before');
    end if;
    select id into v_existing from pod_sessions where setup_intent_id = p_setup_intent_id;
    if found then
        insert into setup_intent_outcomes (setup_intent_id, outcome, session_id)
        values (p_setup_intent_id, 'started', v_existing);
        return jsonb_build_object('outcome', 'existing', 'session_id', v_existing);
    end if;

    -- With holds on, only a hold Stripe holds may open the door (nothing is decided).
    select * into v_hold from card_holds where setup_intent_id = p_setup_intent_id;
    if found and v_hold.state <> 'held' then
        return jsonb_build_object('outcome', 'hold_released');
    end if;

    -- Free, and in service: not disabled by the operator, and its lock (if it has one) not
    -- known to be offline. The card was set up before; the pod may have gone out of
    -- service since, and the customer is told so (the e-mail the caller gave).
    update pods set in_use = true
    where id = p_pod_id and not in_use and disabled_reason is null
      and (seam_device_id is null or lock_online is not false)
    returning * into v_pod;
    if not found then
        insert into setup_intent_outcomes (setup_intent_id, outcome)
        values (p_setup_intent_id, 'pod_unavailable');
        perform qwip_queue_emails(jsonb_build_array(p_unavailable_email));
        return jsonb_build_object('outcome', 'pod_unavailable');
    end if;

    if exists (
        select 1 from pod_sessions
        where pod_id = p_pod_id and access_code = p_access_code
          and end_time > now() - interval '1 day'
    ) then
        update pods set in_use = false where id = p_pod_id;
        return jsonb_build_object('outcome', 'code_clash');
    end if;

    insert into pod_sessions (
        id, pod_id, user_email, price_per_minute, currency, stripe_customer_id,
        stripe_payment_method, setup_intent_id, access_code, free_minutes,
        hold_payment_intent_id, hold_pence
    ) values (
        p_session_id, p_pod_id, p_user_email, v_pod.price, v_pod.currency, p_customer_id,
        p_payment_method, p_setup_intent_id, p_access_code, p_free_minutes,
        v_hold.payment_intent_id, v_hold.amount_pence
    ) returning start_time into v_start;
    insert into setup_intent_outcomes (setup_intent_id, outcome, session_id)
    values (p_setup_intent_id, 'started', p_session_id);
    update card_holds set state = 'started', updated_at = now()
    where setup_intent_id = p_setup_intent_id;

    perform qwip_queue_emails(jsonb_build_array(
        p_started_email || jsonb_build_object(
            'payload', (p_started_email -> 'payload') || jsonb_build_object('start_time', v_start)
        )
    ));
    return jsonb_build_object('outcome', 'started', 'session_id', p_session_id);
end;
$$;
