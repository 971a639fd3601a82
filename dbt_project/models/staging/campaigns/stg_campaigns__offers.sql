with source as (
    select * from {{ ref('offers') }}
),

renamed as (
    select
        -- ids
        offer_id,
        campaign_id,
        -- strings
        name as offer_name,
        -- numerics
        value_per_conversion_pen
    from source
)

select * from renamed
