"""The PubChem workflow, as in the NOMAD docs: activities with retries and timeouts."""

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from .activities import get_cid, get_properties
    from .models import PubChemInput, PubChemOutput

RETRY = RetryPolicy(
    maximum_attempts=3,
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=10),
)


@workflow.defn
class PubChemWorkflow:
    """Compound name -> CID -> properties."""

    @workflow.run
    async def run(self, data: PubChemInput) -> PubChemOutput:
        cid = await workflow.execute_activity(
            get_cid, data.compound, start_to_close_timeout=timedelta(seconds=30), retry_policy=RETRY
        )
        properties = await workflow.execute_activity(
            get_properties, cid, start_to_close_timeout=timedelta(seconds=30), retry_policy=RETRY
        )
        return PubChemOutput(compound=data.compound, cid=cid, properties=properties)
