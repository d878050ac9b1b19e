"""The NOMAD docs' example action: look a compound up on PubChem."""

from nomad_actions import Action, ActionEntryPoint, TaskQueue


class PubChemEntryPoint(ActionEntryPoint):
    """Entry point of the PubChem action; imports its code only when loaded."""

    def load(self) -> Action:
        from .activities import get_cid, get_properties
        from .workflows import PubChemWorkflow

        return Action(
            task_queue=self.task_queue,
            workflow=PubChemWorkflow,
            activities=[get_cid, get_properties],
        )


pubchem_action = PubChemEntryPoint(
    name="PubChem lookup",
    description="Find a compound on PubChem and return its CID and properties.",
    task_queue=TaskQueue.CPU,
)
