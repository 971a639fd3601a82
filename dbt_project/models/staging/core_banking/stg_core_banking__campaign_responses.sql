with source as (
    select * from {{ source('core_banking', 'campaign_responses') }}
),

renamed as (
    select
        -- ids
        response_id,
        customer_id,
        campaign_id,
        -- strings
        channel,
        response,
        -- a member of a list the bank tracked without contacting (the experiment's control): 0 (1/0)
        coalesce(cast(contacted as integer), 1) as is_contacted,
        -- dates
        contact_date,
        list_date,  -- the platform's list the member was on (none: the bank's own campaigns)
        _business_date as loaded_for_date  -- the business date of the load that last wrote the row
    from source
)

select * from renamed
