{{ config(tags=['after_scoring'], materialized='incremental', unique_key='as_of_date') }}
-- One row per customer on the business date: what a sales agent sees about the customer in front of
-- them (profile, products, activity, last contact and today's offers). Personal data masked: no
-- name, document number or birth date in clear.
with customers as (
    select * from {{ ref('stg_core_banking__customers') }}
    where as_of_date = {{ business_date() }}
),

balances as (
    select * from {{ ref('int_accounts_aggregated_to_customers') }}
),

features as (
    select * from {{ ref('customer_features') }}
    where as_of_date = {{ business_date() }}
),

contacts as (
    select contact_id, customer_id, contact_date, campaign_id, channel, response
    from {{ ref('fct_campaign_contacts') }}
    -- the 365 days the features count and a fresh warehouse's history load brings: a warehouse that
    -- also loaded older dates' histories knows older contacts, and the date's row must not depend on it
    where contact_date > {{ days_before(365) }} and contact_date <= {{ business_date() }}
),

last_contact_dates as (
    select customer_id, max(contact_date) as contact_date
    from contacts
    group by customer_id
),

last_contacts as (
    -- each customer's latest contact (the highest contact id on that date): two aggregates and a
    -- join instead of ranking every contact of the year, which was a third of this model's time
    -- (joined back on all three: one row per customer even where an id is held twice)
    select c.*
    from contacts as c
    inner join (
        select c.customer_id, c.contact_date, max(c.contact_id) as contact_id
        from contacts as c
        inner join last_contact_dates as d on d.customer_id = c.customer_id and d.contact_date = c.contact_date
        group by c.customer_id, c.contact_date
    ) as l on l.customer_id = c.customer_id and l.contact_date = c.contact_date and l.contact_id = c.contact_id
),

offers as (
    select
        customer_id,
        cast(count(*) as integer) as offers_today,
        max(case when "rank" = 1 then campaign_id end) as top_campaign_id,
        max(case when "rank" = 1 then offer_id end) as top_offer_id,
        max(case when "rank" = 1 then channel end) as top_offer_channel
    from {{ source('scoring', 'customer_campaign_assignments') }}
    where business_date = {{ business_date() }} and arm <> 'control'  -- the control arm is never offered anything
    group by customer_id
),

final as (
    select
        -- keys
        {{ business_date() }} as as_of_date,
        c.customer_id,
        -- who (masked)
        c.full_name_masked,
        c.document_type,
        c.document_number_masked,
        f.age,
        c.segment,
        c.income_band,
        c.region,
        c.district,
        f.tenure_days,
        -- how they may be contacted
        c.consent_sms,
        c.consent_email,
        c.consent_phone,
        c.consent_push,
        c.consent_social,
        -- products and balances
        f.n_products,
        f.has_savings,
        f.has_checking,
        f.has_cts,
        f.has_term_deposit,
        f.has_credit_card,
        f.has_personal_loan,
        f.has_mortgage,
        f.has_insurance,
        f.total_balance_pen,
        f.total_debt_pen,
        {% for p in var('products') | map('lower') %}
        cast(coalesce(b.balance_{{ p }}_pen, 0) as decimal(18, 2)) as balance_{{ p }}_pen,
        {% endfor %}
        -- activity
        f.tx_count_30d,
        f.spend_30d_pen,
        f.days_since_last_tx,
        -- last contact
        lc.contact_date as last_contact_date,
        lc.campaign_id as last_contact_campaign_id,
        lc.channel as last_contact_channel,
        lc.response as last_contact_response,
        -- today's offers
        coalesce(o.offers_today, 0) as offers_today,
        o.top_campaign_id,
        o.top_offer_id,
        o.top_offer_channel
    from customers as c
    inner join features as f on f.customer_id = c.customer_id
    left join balances as b on b.customer_id = c.customer_id
    left join last_contacts as lc on lc.customer_id = c.customer_id
    left join offers as o on o.customer_id = c.customer_id
)

select * from final
