"""The formula analysis workflow: parse, weigh in parallel chunks, summarize."""

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from .activities import compute_masses, parse_formulas, summarize
    from .models import FormulaMass, FormulasInput, FormulasReport

# A short heartbeat timeout makes progress reach the server every couple of seconds.
OPTIONS = {
    "start_to_close_timeout": timedelta(minutes=10),
    "heartbeat_timeout": timedelta(seconds=3),
    "retry_policy": RetryPolicy(maximum_attempts=3),
}


@workflow.defn
class FormulasWorkflow:
    """Formulas -> element counts -> molar masses -> report."""

    @workflow.run
    async def run(self, data: FormulasInput) -> FormulasReport:
        workflow.logger.info("Analysing %d formulas", len(data.formulas))
        parsed = await workflow.execute_activity(
            parse_formulas, args=[data.formulas, data.delay_per_formula], **OPTIONS
        )
        chunks = [parsed[i : i + 4] for i in range(0, len(parsed), 4)]
        weighed = await asyncio.gather(
            *(
                workflow.execute_activity(
                    compute_masses, args=[chunk, data.delay_per_formula], **OPTIONS
                )
                for chunk in chunks
            )
        )
        masses: list[FormulaMass] = [m for part in weighed for m in part]
        return await workflow.execute_activity(summarize, masses, **OPTIONS)
