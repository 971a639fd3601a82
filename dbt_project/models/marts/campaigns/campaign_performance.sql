{{ config(tags=['after_scoring']) }}
-- Per day x campaign x channel: how many offers we served (the model's and the exploration arm's),
-- how many the control arm held out, how many the bank contacted, how many accepted, the conversion
-- rate and the value won. Built after the day's scoring, so the
-- business date's own assignment is in it.
with assigned as (
    select
        business_date as performance_date,
        campaign_id,
        channel,
        sum(case when arm = 'control' then 0 else 1 end) as assigned,
        sum(case when arm = 'control' then 1 else 0 end) as held_out,
        0 as contacted,
        0 as accepted,
        cast(0 as decimal(18, 2)) as value_pen
    from {{ source('scoring', 'customer_campaign_assignments') }}
    group by business_date, campaign_id, channel
),

contacted as (
    select
        contact_date as performance_date,
        campaign_id,
        channel,
        0 as assigned,
        0 as held_out,
        count(*) as contacted,
        sum(is_accepted) as accepted,
        cast(sum(value_pen) as decimal(18, 2)) as value_pen
    from {{ ref('fct_campaign_contacts') }}
    group by contact_date, campaign_id, channel
),

combined as (
    select * from assigned
    union all
    select * from contacted
),

final as (
    select
        performance_date,
        campaign_id,
        channel,
        cast(sum(assigned) as integer) as assigned,
        cast(sum(held_out) as integer) as held_out,
        cast(sum(contacted) as integer) as contacted,
        cast(sum(accepted) as integer) as accepted,
        cast(cast(sum(accepted) as decimal(18, 6)) / nullif(sum(contacted), 0) as decimal(9, 6)) as conversion_rate,
        cast(sum(value_pen) as decimal(18, 2)) as value_pen
    from combined
    group by performance_date, campaign_id, channel
)

select * from final
