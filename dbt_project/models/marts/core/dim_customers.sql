{{ config(materialized='view') }}
-- Every version of every customer (SCD type 2, from the snapshot), with its validity and a flag on
-- the current one. Personal data only masked; no date of birth (customer_360 has the age by date).
with versions as (
    select * from {{ ref('snp_core_banking__customers') }}
),

final as (
    select
        -- keys
        dbt_scd_id as customer_version_id,
        customer_id,
        -- profile
        document_type,
        document_number_masked,
        full_name_masked,
        segment,
        income_band,
        region,
        district,
        consent_sms,
        consent_email,
        consent_phone,
        consent_push,
        consent_social,
        created_on,
        -- validity
        cast(dbt_valid_from as date) as valid_from,
        cast(dbt_valid_to as date) as valid_to,
        case when dbt_valid_to = cast('9999-12-31' as date) then 1 else 0 end as is_current
    from versions
)

select * from final
