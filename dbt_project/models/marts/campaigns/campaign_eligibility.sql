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
select
    as_of_date,
    customer_id,
    campaign_id,
    offer_id,
    channel,
    value_per_conversion_pen,
    priority_weight,
    valid_until
from {{ ref('int_customers_evaluated_against_campaigns') }}
where exclusion_reason is null
