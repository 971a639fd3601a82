{{ config(materialized='view') }}
-- Every version of every customer (SCD type 2, from the history snp_core_banking__customers), valid
-- from its updated_on to the next version's, with a flag on the current one. Personal data only masked; no date of birth (customer_360 has the age by date).
-- The history's columns by name: a warehouse whose history began as dbt's snapshot still has that
-- snapshot's own dbt_valid_to and dbt_updated_at (empty on the rows added since); they are not read.
with versions as (
    select
        dbt_scd_id,
        customer_id,
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
        dbt_valid_from,
        coalesce(
            lead(updated_on) over (partition by customer_id order by updated_on),
            cast('9999-12-31' as date)
        ) as dbt_valid_to
    from {{ ref('snp_core_banking__customers') }}
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
