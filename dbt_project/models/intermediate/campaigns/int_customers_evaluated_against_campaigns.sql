-- Every customer x live campaign on the business date, with the first rule that rules the pair out
-- (null when none does) and, for the pairs that pass, the channel and offer to use.
-- campaign_eligibility keeps the pairs that pass; campaign_exclusions counts the rest by reason.
{% set consents = ['consent_sms', 'consent_email', 'consent_phone', 'consent_push', 'consent_social'] %}
with features as (
    select customer_id, age, income_band, total_balance_pen, segment, {{ consents | join(', ') }}
    from {{ ref('customer_features') }}
    where as_of_date = {{ business_date() }}
),

campaigns as (
    select * from {{ ref('stg_campaigns__campaigns') }}
    where start_date <= {{ business_date() }} and end_date >= {{ business_date() }}
),

holdings as (
    select distinct customer_id, product
    from {{ ref('stg_core_banking__accounts') }}
    where status = 'ACTIVE'
),

past_responses as (
    -- per customer and campaign: declined within the channel's suppression window, accepted in the year
    select
        r.customer_id,
        r.campaign_id,
        max(case when r.response = 'ACCEPTED'
            and {{ dbt.datediff('r.contact_date', business_date(), 'day') }} < 365 then 1 else 0 end)
            as accepted_within_year,
        max(case when r.response = 'DECLINED'
            and {{ dbt.datediff('r.contact_date', business_date(), 'day') }} < p.suppress_days_after_decline
            then 1 else 0 end) as declined_recently
    from {{ ref('stg_core_banking__campaign_responses') }} as r
    inner join {{ ref('stg_campaigns__contact_policies') }} as p on p.channel = r.channel
    group by r.customer_id, r.campaign_id
),

consent_profiles as (
    -- at most 32 combinations of consents: the channel choice is worked out once per combination
    select distinct {{ consents | join(', ') }} from features
),

channel_options as (
    select
        ch.campaign_id,
        ch.channel,
        {% for c in consents %}p.{{ c }},{% endfor %}
        row_number() over (
            partition by ch.campaign_id{% for c in consents %}, p.{{ c }}{% endfor %}
            order by ch.preference
        ) as channel_rank
    from consent_profiles as p
    inner join {{ ref('stg_campaigns__campaign_channels') }} as ch
        on case ch.channel
            when 'SMS' then p.consent_sms
            when 'EMAIL' then p.consent_email
            when 'PHONE' then p.consent_phone
            when 'PUSH' then p.consent_push
            when 'SOCIAL' then p.consent_social
            else 0
        end = 1
),

best_channels as (
    select * from channel_options where channel_rank = 1
),

evaluated as (
    select
        f.customer_id,
        c.campaign_id,
        c.priority_weight,
        c.end_date as valid_until,
        case
            when f.age < c.min_age or f.age > c.max_age then 'AGE'
            when f.income_band < c.min_income_band then 'INCOME_BAND'
            when f.total_balance_pen < c.min_total_balance_pen then 'BALANCE'
            when s.campaign_id is null then 'SEGMENT'
            when c.required_product is not null and req.customer_id is null then 'REQUIRED_PRODUCT_MISSING'
            when c.excluded_product is not null and exc.customer_id is not null then 'ALREADY_HOLDS_PRODUCT'
            when pr.accepted_within_year = 1 then 'ACCEPTED_WITHIN_YEAR'
            when pr.declined_recently = 1 then 'DECLINED_RECENTLY'
            when bc.channel is null then 'NO_CONSENTED_CHANNEL'
        end as exclusion_reason,
        bc.channel
    from features as f
    cross join campaigns as c
    left join {{ ref('stg_campaigns__campaign_segments') }} as s
        on s.campaign_id = c.campaign_id and s.segment = f.segment
    left join holdings as req on req.customer_id = f.customer_id and req.product = c.required_product
    left join holdings as exc on exc.customer_id = f.customer_id and exc.product = c.excluded_product
    left join past_responses as pr on pr.customer_id = f.customer_id and pr.campaign_id = c.campaign_id
    left join best_channels as bc
        on bc.campaign_id = c.campaign_id
        {% for c in consents %}and bc.{{ c }} = f.{{ c }} {% endfor %}
),

final as (
    select
        {{ business_date() }} as as_of_date,
        e.customer_id,
        e.campaign_id,
        e.exclusion_reason,
        case when e.exclusion_reason is null then e.channel end as channel,
        o.offer_id,
        o.value_per_conversion_pen,
        e.priority_weight,
        e.valid_until
    from evaluated as e
    left join {{ ref('stg_campaigns__offers') }} as o on o.campaign_id = e.campaign_id
)

select * from final
