with source as (
    select * from {{ ref('campaign_segments') }}
),

renamed as (
    select
        campaign_id,
        segment
    from source
)

select * from renamed
