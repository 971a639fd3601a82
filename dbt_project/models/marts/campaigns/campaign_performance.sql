{{ config(tags=['after_scoring']) }}
-- Per day x campaign x channel: how many offers we served (the model's and the exploration arm's),
-- how many the control arm held out, how many the bank contacted, how many accepted, the conversion
-- rate and the value won; and what the campaign added: the acceptances of the model arm's members
-- the bank contacted that day against its control members (tracked, not contacted), from the same
-- arbitration the day before, so the two differ only by the contact. Built after the day's
-- scoring, so the business date's own assignment is in it.
with assigned as (
    select
        business_date as performance_date,
        campaign_id,
        channel,
        sum(case when arm = 'control' then 0 else 1 end) as assigned,
        sum(case when arm = 'control' then 1 else 0 end) as held_out,
        0 as contacted,
        0 as accepted,
        cast(0 as decimal(18, 2)) as value_pen,
        0 as treated,
        0 as treated_accepted,
        0 as control,
        0 as control_accepted
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
        cast(sum(value_pen) as decimal(18, 2)) as value_pen,
        0 as treated,
        0 as treated_accepted,
        0 as control,
        0 as control_accepted
    from {{ ref('fct_campaign_contacts') }}
    group by contact_date, campaign_id, channel
),

-- each member of a list the platform handed, with its arm (the bank's own campaigns are in no list)
experiment as (
    select
        r.contact_date as performance_date,
        r.campaign_id,
        r.channel,
        0 as assigned,
        0 as held_out,
        0 as contacted,
        0 as accepted,
        cast(0 as decimal(18, 2)) as value_pen,
        sum(case when a.arm = 'model' and r.is_contacted = 1 then 1 else 0 end) as treated,
        sum(case when a.arm = 'model' and r.is_contacted = 1 and r.response = 'ACCEPTED' then 1 else 0 end)
            as treated_accepted,
        sum(case when a.arm = 'control' and r.is_contacted = 0 then 1 else 0 end) as control,
        sum(case when a.arm = 'control' and r.is_contacted = 0 and r.response = 'ACCEPTED' then 1 else 0 end)
            as control_accepted
    from {{ ref('stg_core_banking__campaign_responses') }} as r
    inner join {{ source('scoring', 'customer_campaign_assignments') }} as a
        on
            a.customer_id = r.customer_id
            and a.campaign_id = r.campaign_id
            and a.business_date = r.list_date
    where r.contact_date <= {{ business_date() }}
    group by r.contact_date, r.campaign_id, r.channel
),

combined as (
    select * from assigned
    union all
    select * from contacted
    union all
    select * from experiment
),

summed as (
    select
        performance_date,
        campaign_id,
        channel,
        cast(sum(assigned) as integer) as assigned,
        cast(sum(held_out) as integer) as held_out,
        cast(sum(contacted) as integer) as contacted,
        cast(sum(accepted) as integer) as accepted,
        cast(sum(value_pen) as decimal(18, 2)) as value_pen,
        cast(sum(treated) as integer) as treated,
        cast(sum(treated_accepted) as integer) as treated_accepted,
        cast(sum(control) as integer) as control,
        cast(sum(control_accepted) as integer) as control_accepted
    from combined
    group by performance_date, campaign_id, channel
),

rates as (
    select
        *,
        cast(treated_accepted as double precision) / nullif(treated, 0) as treated_rate,
        cast(control_accepted as double precision) / nullif(control, 0) as control_rate,
        -- the interval's variance from rates with one acceptance and one refusal added to each arm
        -- (Agresti-Caffo): a day whose control accepted nothing would otherwise count as certain
        cast(treated_accepted + 1 as double precision) / (treated + 2) as treated_rate_adjusted,
        cast(control_accepted + 1 as double precision) / (control + 2) as control_rate_adjusted
    from summed
),

final as (
    select
        performance_date,
        campaign_id,
        channel,
        assigned,
        held_out,
        contacted,
        accepted,
        cast(cast(accepted as decimal(18, 6)) / nullif(contacted, 0) as decimal(9, 6)) as conversion_rate,
        value_pen,
        treated,
        treated_accepted,
        control,
        control_accepted,
        -- treated x (treated rate - control rate), and its 95% interval (normal approximation,
        -- Agresti-Caffo variance)
        cast(treated * (treated_rate - control_rate) as decimal(18, 2)) as incremental_acceptances,
        cast(treated * (treated_rate - control_rate - 1.96 * sqrt(
            treated_rate_adjusted * (1 - treated_rate_adjusted) / (treated + 2)
            + control_rate_adjusted * (1 - control_rate_adjusted) / (control + 2)
        )) as decimal(18, 2)) as incremental_low,
        cast(treated * (treated_rate - control_rate + 1.96 * sqrt(
            treated_rate_adjusted * (1 - treated_rate_adjusted) / (treated + 2)
            + control_rate_adjusted * (1 - control_rate_adjusted) / (control + 2)
        )) as decimal(18, 2)) as incremental_high
    from rates
)

select * from final
