"""Hand a date's list to the bank's campaign execution: who to contact the next day, on which channel
and for which campaign (the model's and the exploration arm's offers, in priority order), and who
to track without contacting (the control arm), through the integration API
(``PUT /v1/campaign-executions/{business_date}``).

Only the list of the snapshot that went live is handed: an older date, not published, is not what
the bank works on. Handing a date again replaces its list, so a rerun is harmless. Where the bank's
marketing pulls the segments from the read API instead, it is off: by default it is on with the
embedded sandbox bank only, and ``CRM_HAND_OFF_EXECUTIONS=true`` turns it on for a bank's API.
"""

from __future__ import annotations

import datetime as dt
import logging

from crm.integration_api import IntegrationApiError, client_for
from crm.settings import Settings
from crm.warehouse import warehouse
from models.core_banking import ExecutionMember

log = logging.getLogger(__name__)


def execution_list(business_date: dt.date, settings: Settings) -> list[dict]:
    """The members of ``business_date``'s list, highest priority first (the order the bank's
    channels work through within their capacities)."""
    rows = warehouse(settings).rows(
        "select customer_id, campaign_id, channel, case when arm = 'control' then 0 else 1 end "
        "from marts.customer_campaign_assignments "
        "where business_date = :d order by priority desc, customer_id, rank",
        {"d": business_date},
    )
    return [
        ExecutionMember(customer_id=c, campaign_id=campaign, channel=channel, contact=bool(contact)).model_dump()
        for c, campaign, channel, contact in rows
    ]


def hand_off(business_date: dt.date, settings: Settings, published: bool) -> dict:
    """Hand ``business_date``'s list to the bank when its snapshot went live; what was done, and why."""
    enabled = settings.model.hand_off_executions
    if enabled is None:  # unset: the embedded sandbox takes lists; a bank's API, only when it is said to
        enabled = settings.core_api.url is None
    if not enabled:
        return {"handed_off": False, "why": "CRM_HAND_OFF_EXECUTIONS is off: marketing pulls the segments"}
    if not published:
        return {"handed_off": False, "why": f"the snapshot of {business_date} is not the live one: the bank works "
                                            "on the live snapshot's list"}  # fmt: skip
    members = execution_list(business_date, settings)
    with client_for(settings) as client:
        try:
            answer = client.put_json(f"/v1/campaign-executions/{business_date.isoformat()}", members)
        except IntegrationApiError as refused:
            if refused.status != 409:
                raise
            # the bank worked the next day already (a rerun of a date whose list it used, with another)
            log.warning("the bank refused %s's list: %s", business_date, refused)
            return {"handed_off": False, "why": f"the bank refused it: {refused}"}
    log.info("handed %s members (%s to contact) of %s to the bank's campaign execution",
             answer["members"], answer["to_contact"], business_date)  # fmt: skip
    return {"handed_off": True, "members": answer["members"], "to_contact": answer["to_contact"]}
