{{ config(materialized='incremental', unique_key='contact_date') }}
-- Every campaign contact up to the business date, one row each, with its outcome and the value it
-- brought: what the training set and campaign_performance are built from. Built whole the first
-- time; then each run replaces the contact dates of the last `contact_refresh_days` (a response
-- can still change while its campaign's response window is open) and adds the days before the
-- mart's first (a backfill of an older date); the days between stay as they are.
with responses as (
    select * from {{ ref('stg_core_banking__campaign_responses') }}
    -- a control member the bank only tracked is not a contact
    where contact_date <= {{ business_date() }} and is_contacted = 1
    {% if flags.INTROSPECT is not false and is_incremental() %}
        -- the refresh window, and any older day the mart lacks (a backfill reaching further back
        -- than the run that first built it)
        and (contact_date > {{ days_before(var('contact_refresh_days')) }}
            or contact_date < (select min(contact_date) from {{ this }}))
    {% endif %}
),

campaigns as (
    select * from {{ ref('stg_campaigns__campaigns') }}
),

offers as (
    select * from {{ ref('stg_campaigns__offers') }}
),

final as (
    select
        -- keys
        r.response_id as contact_id,
        r.customer_id,
        r.campaign_id,
        o.offer_id,
        -- the contact
        r.channel,
        r.contact_date,
        r.list_date,
        r.response,
        case when r.response = 'ACCEPTED' then 1 else 0 end as is_accepted,
        case when r.response = 'DECLINED' then 1 else 0 end as is_declined,
        c.response_window_days,
        cast(case when r.response = 'ACCEPTED' then o.value_per_conversion_pen else 0 end as decimal(12, 2))
            as value_pen
    from responses as r
    left join campaigns as c on c.campaign_id = r.campaign_id
    left join offers as o on o.campaign_id = r.campaign_id
)

select * from final
