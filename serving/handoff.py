"""Hand a date's list to the bank's campaign execution: who to contact the next day, on which channel
and for which campaign (the model's and the exploration arm's offers, in priority order), and who
to track without contacting (the control arm), through the integration API
(``PUT /v1/campaign-executions/{business_date}``).

Only the list of the snapshot that went live is handed: an older date, not published, is not what
the bank works on. Handing a date again replaces its list, so a rerun is harmless. Where the bank's
marketing pulls the segments from the read API instead, ``CRM_HAND_OFF_EXECUTIONS=false`` turns it
off.
"""

from __future__ import annotations

import datetime as dt
import logging

from crm.integration_api import client_for
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
    if not settings.model.hand_off_executions:
        return {"handed_off": False, "why": "CRM_HAND_OFF_EXECUTIONS is false: marketing pulls the segments"}
    if not published:
        return {"handed_off": False, "why": f"the snapshot of {business_date} is not the live one: the bank works "
                                            "on the live snapshot's list"}  # fmt: skip
    members = execution_list(business_date, settings)
    with client_for(settings) as client:
        answer = client.put_json(f"/v1/campaign-executions/{business_date.isoformat()}", members)
    log.info("handed %s members (%s to contact) of %s to the bank's campaign execution",
             answer["members"], answer["to_contact"], business_date)  # fmt: skip
    return {"handed_off": True, "members": answer["members"], "to_contact": answer["to_contact"]}
