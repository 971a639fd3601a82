-- Each customer's contact history over the last 365 days.
with responses as (
    select
        customer_id,
        response,
        {{ dbt.datediff('contact_date', business_date(), 'day') }} as days_ago
    from {{ ref('stg_core_banking__campaign_responses') }}
    where contact_date > {{ days_before(365) }} and contact_date <= {{ business_date() }}
        and is_contacted = 1  -- a control member the bank only tracked was not contacted
),

aggregated as (
    select
        customer_id,
        cast(count(*) as integer) as contacts_365d,
        cast(sum(case when response = 'ACCEPTED' then 1 else 0 end) as integer) as accepts_365d,
        cast(sum(case when response = 'DECLINED' then 1 else 0 end) as integer) as declines_365d,
        cast(min(days_ago) as integer) as days_since_last_contact
    from responses
    group by customer_id
)

select * from aggregated
