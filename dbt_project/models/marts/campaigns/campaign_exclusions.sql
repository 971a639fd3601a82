{{ config(materialized='incremental', unique_key='as_of_date') }}
-- Per as-of date x live campaign x reason: how many customers the rules kept out, the first rule
-- that excluded each (age before income before balance ..., consents last), and how many passed.
select
    as_of_date,
    campaign_id,
    coalesce(exclusion_reason, 'ELIGIBLE') as outcome,
    cast(count(*) as integer) as customers
from {{ ref('int_customers_evaluated_against_campaigns') }}
group by as_of_date, campaign_id, coalesce(exclusion_reason, 'ELIGIBLE')
