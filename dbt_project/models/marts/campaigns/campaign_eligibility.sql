{{ config(materialized='incremental', unique_key='as_of_date') }}
-- One row per customer x live campaign that passes the campaign's eligibility rules, the customer's
-- channel consents and the contact policy's suppression after a decline; with the channel to use
-- (the campaign's most preferred channel the customer consented to) and the offer.
with passed as (
    select * from {{ ref('int_customers_evaluated_against_campaigns') }}
    where exclusion_reason is null
),

campaigns as (
    select * from {{ ref('stg_campaigns__campaigns') }}
),

offers as (
    select * from {{ ref('stg_campaigns__offers') }}
),

final as (
    select
        p.as_of_date,
        p.customer_id,
        p.campaign_id,
        o.offer_id,
        p.channel,
        o.value_per_conversion_pen,
        c.priority_weight,
        c.end_date as valid_until
    from passed as p
    inner join campaigns as c on c.campaign_id = p.campaign_id
    inner join offers as o on o.campaign_id = p.campaign_id
)

select * from final
