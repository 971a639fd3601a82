with source as (
    select * from {{ ref('campaign_channels') }}
),

renamed as (
    select
        -- ids
        campaign_id,
        -- strings
        channel,
        -- numerics
        preference
    from source
)

select * from renamed
