{{
    config(
        materialized='incremental',
        incremental_strategy='delete+insert',
        unique_key='as_of_date',
        on_schema_change='fail'
    )
}}
-- One row per customer x live campaign that passes the campaign's eligibility rules, the customer's
-- channel consents and the contact policy's suppression after a decline; with the channel to use
-- (the campaign's most preferred channel the customer consented to) and the offer.
with features as (
    select * from {{ ref('customer_features') }}
    where as_of_date = {{ business_date() }}
),

campaigns as (
    select * from {{ ref('stg_campaigns__campaigns') }}
    where start_date <= {{ business_date() }} and end_date >= {{ business_date() }}
),

segments as (
    select * from {{ ref('stg_campaigns__campaign_segments') }}
),

holdings as (
    select customer_id, product from {{ ref('stg_core_banking__accounts') }} where status = 'ACTIVE'
),

rules_passed as (
    select
        f.customer_id,
        f.consent_sms,
        f.consent_email,
        f.consent_phone,
        f.consent_push,
        f.consent_social,
        c.campaign_id,
        c.priority_weight,
        c.end_date as valid_until
    from features as f
    inner join campaigns as c
        on f.age between c.min_age and c.max_age
        and f.income_band >= c.min_income_band
        and f.total_balance_pen >= c.min_total_balance_pen
    inner join segments as s
        on s.campaign_id = c.campaign_id and s.segment = f.segment
    where
        (c.required_product is null or exists (
            select 1 from holdings as h where h.customer_id = f.customer_id and h.product = c.required_product
        ))
        and (c.excluded_product is null or not exists (
            select 1 from holdings as h where h.customer_id = f.customer_id and h.product = c.excluded_product
        ))
),

suppressed as (
    -- declined this campaign within the channel's suppression window, or already accepted it
    select distinct r.customer_id, r.campaign_id
    from {{ ref('stg_core_banking__campaign_responses') }} as r
    inner join {{ ref('stg_campaigns__contact_policies') }} as p on p.channel = r.channel
    where
        (r.response = 'DECLINED'
            and {{ dbt.datediff('r.contact_date', business_date(), 'day') }} < p.suppress_days_after_decline)
        or (r.response = 'ACCEPTED' and {{ dbt.datediff('r.contact_date', business_date(), 'day') }} < 365)
),

channel_options as (
    select
        e.customer_id,
        e.campaign_id,
        e.priority_weight,
        e.valid_until,
        ch.channel,
        row_number() over (partition by e.customer_id, e.campaign_id order by ch.preference) as channel_rank
    from rules_passed as e
    inner join {{ ref('stg_campaigns__campaign_channels') }} as ch on ch.campaign_id = e.campaign_id
    where
        case ch.channel
            when 'SMS' then e.consent_sms
            when 'EMAIL' then e.consent_email
            when 'PHONE' then e.consent_phone
            when 'PUSH' then e.consent_push
            when 'SOCIAL' then e.consent_social
            else 0
        end = 1
),

eligible as (
    select
        {{ business_date() }} as as_of_date,
        o.customer_id,
        o.campaign_id,
        offer.offer_id,
        o.channel,
        offer.value_per_conversion_pen,
        o.priority_weight,
        o.valid_until
    from channel_options as o
    inner join {{ ref('stg_campaigns__offers') }} as offer on offer.campaign_id = o.campaign_id
    left join suppressed as s on s.customer_id = o.customer_id and s.campaign_id = o.campaign_id
    where o.channel_rank = 1 and s.customer_id is null
)

select * from eligible
