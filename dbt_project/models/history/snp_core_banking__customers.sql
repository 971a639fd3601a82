{{ config(
    materialized='incremental',
    schema='snapshots',
    unique_key=['customer_id', 'updated_on'],
    incremental_strategy='delete+insert',
    on_schema_change='append_new_columns',
    full_refresh=false
) }}
-- Every version of every customer's profile the warehouse has loaded, one row per (customer,
-- updated_on): the run's load adds the versions it brings that the history does not hold yet (a
-- version never changes, so one it holds is already right and a rerun adds nothing) and leaves
-- every other version as it was. A version is known
-- by the bank's own updated_on, whatever the order of the runs that loaded it, so a backfill of an
-- older date adds that date's versions behind newer ones already held (a dbt snapshot's timestamp
-- strategy skips a version older than the current one: dim_customers as of a backfilled date then
-- depended on which dates ran first). Never rebuilt by --full-refresh: the history outlives raw's
-- retention of clear personal data. Validity (valid_to) is dim_customers', from the next version.
select
    {{ dbt.hash(dbt.concat([
        "cast(customer_id as " ~ dbt.type_string() ~ ")", "'|'", "cast(updated_on as " ~ dbt.type_string() ~ ")"
    ])) }} as dbt_scd_id,
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
    updated_on,
    updated_on as dbt_valid_from
from {{ ref('int_customers_filtered_to_business_date') }} as c
{% if flags.INTROSPECT is not false and is_incremental() %}
-- only the versions the history lacks: a version never changes, so one it holds is already right,
-- and a day's load brings about a million versions of which a few thousand are new (rewriting them
-- all was most of this model's time)
where not exists (
    select 1 from {{ this }} as held
    where held.customer_id = c.customer_id and held.updated_on = c.updated_on
)
{% endif %}
