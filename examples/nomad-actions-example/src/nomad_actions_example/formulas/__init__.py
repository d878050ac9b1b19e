"""An offline example action: chemical formulas -> molar masses and composition."""

from nomad_actions import Action, ActionEntryPoint, TaskQueue


class FormulasEntryPoint(ActionEntryPoint):
    """Entry point of the formula analysis; imports its code only when loaded."""

    def load(self) -> Action:
        from .activities import compute_masses, parse_formulas, summarize
        from .workflows import FormulasWorkflow

        return Action(
            task_queue=self.task_queue,
            workflow=FormulasWorkflow,
            activities=[parse_formulas, compute_masses, summarize],
        )


formulas_action = FormulasEntryPoint(
    name="Formula analysis",
    description="Parse chemical formulas and compute molar masses and mass fractions.",
    task_queue=TaskQueue.CPU,
)
