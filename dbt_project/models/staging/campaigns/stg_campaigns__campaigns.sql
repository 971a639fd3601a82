with source as (
    select * from {{ ref('campaigns') }}
),

renamed as (
    select
        -- ids
        campaign_id,
        -- strings
        name as campaign_name,
        product,
        min_income_band,
        required_product,
        excluded_product,
        -- numerics
        min_age,
        max_age,
        min_total_balance_pen,
        priority_weight,
        daily_capacity,
        response_window_days,
        -- dates
        start_date,
        end_date
    from source
)

select * from renamed
