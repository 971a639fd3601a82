-- Every customer x live campaign on the business date, with the first rule that rules the pair out
-- (null when none does) and, for the pairs that pass, the channel to use.
-- campaign_eligibility keeps the pairs that pass; campaign_exclusions counts the rest by reason.
{% set consents = ['consent_sms', 'consent_email', 'consent_phone', 'consent_push', 'consent_social'] %}
{% set products = var('products') %}
{#- 1 when the customer holds the campaign's required / excluded product (the features' has_* flags) -#}
{% set holds_required -%}
    case c.required_product{% for p in products %} when '{{ p }}' then f.has_{{ p | lower }}{% endfor %} else 0 end
{%- endset %}
{% set holds_excluded -%}
    case c.excluded_product{% for p in products %} when '{{ p }}' then f.has_{{ p | lower }}{% endfor %} else 0 end
{%- endset %}
{#- the five consents as one number (1 SMS, 2 e-mail, 4 phone, 8 push, 16 social): one join key -#}
{% set mask -%}
    {% for c in consents %}{{ 2 ** loop.index0 }} * {{ c }}{{ " + " if not loop.last }}{% endfor %}
{%- endset %}
with features as (
    select
        customer_id, age, income_band, total_balance_pen, segment, {{ consents | join(', ') }},
        {{ mask }} as consent_mask,
        {% for p in products %}has_{{ p | lower }}{{ ", " if not loop.last }}{% endfor %}
    from {{ ref('customer_features') }}
    where as_of_date = {{ business_date() }}
),

campaigns as (
    select * from {{ ref('stg_campaigns__campaigns') }}
    where start_date <= {{ business_date() }} and end_date >= {{ business_date() }}
),

past_responses as (
    -- per customer and campaign: accepted in the year (a control member who bought anyway too: the
    -- customer has the product), declined within the channel's suppression window. Only the contacts that still rule a pair out are kept (a decline older than its
    -- channel's window rules nothing out): a fraction of the year's contacts to group and join
    select
        r.customer_id,
        r.campaign_id,
        max(case when r.response = 'ACCEPTED' then 1 else 0 end) as accepted_within_year,
        max(case when r.response = 'DECLINED' then 1 else 0 end) as declined_recently
    from {{ ref('stg_core_banking__campaign_responses') }} as r
    inner join {{ ref('stg_campaigns__contact_policies') }} as p on p.channel = r.channel
    where r.contact_date > {{ days_before(365) }} and r.contact_date <= {{ business_date() }}
        and (
            r.response = 'ACCEPTED'
            or (r.response = 'DECLINED'
                and r.contact_date > {{ dbt.dateadd('day', '-p.suppress_days_after_decline', business_date()) }})
        )  -- a contact with no answer rules nothing out
    group by r.customer_id, r.campaign_id
),

consent_profiles as (
    -- at most 32 combinations of consents: the channel choice is worked out once per combination
    select distinct consent_mask, {{ consents | join(', ') }} from features
),

channel_options as (
    select
        ch.campaign_id,
        ch.channel,
        p.consent_mask,
        row_number() over (
            partition by ch.campaign_id, p.consent_mask
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
        case
            when f.age < c.min_age or f.age > c.max_age then 'AGE'
            when f.income_band < c.min_income_band then 'INCOME_BAND'
            when f.total_balance_pen < c.min_total_balance_pen then 'BALANCE'
            when s.campaign_id is null then 'SEGMENT'
            when c.required_product is not null and {{ holds_required }} = 0 then 'REQUIRED_PRODUCT_MISSING'
            when c.excluded_product is not null and {{ holds_excluded }} = 1 then 'ALREADY_HOLDS_PRODUCT'
            when pr.accepted_within_year = 1 then 'ACCEPTED_WITHIN_YEAR'
            when pr.declined_recently = 1 then 'DECLINED_RECENTLY'
            when bc.channel is null then 'NO_CONSENTED_CHANNEL'
        end as exclusion_reason,
        bc.channel
    from features as f
    cross join campaigns as c
    left join {{ ref('stg_campaigns__campaign_segments') }} as s
        on s.campaign_id = c.campaign_id and s.segment = f.segment
    left join past_responses as pr on pr.customer_id = f.customer_id and pr.campaign_id = c.campaign_id
    left join best_channels as bc
        on bc.campaign_id = c.campaign_id and bc.consent_mask = f.consent_mask
),

final as (
    -- narrow on purpose: about 12 rows per customer; campaign_eligibility adds the offer and weights
    select
        {{ business_date() }} as as_of_date,
        customer_id,
        campaign_id,
        exclusion_reason,
        case when exclusion_reason is null then channel end as channel
    from evaluated
)

select * from final
