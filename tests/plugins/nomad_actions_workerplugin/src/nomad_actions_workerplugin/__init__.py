"""A NOMAD action plugin run end to end on the nomad-actions worker by the test suite.

Everything here is written as for upstream NOMAD: plain ``temporalio`` decorators, Pydantic
models and dataclasses; nothing imports the engine except the entry points.
"""

#: The task queue of every action of this plugin.
WORKER_QUEUE = "nomad-worker-queue"
#: Where a worker serving only this plugin's activities listens (see ``RemoteCallerWorkflow``).
ACTIVITIES_QUEUE = "nomad-worker-activities"
#: Where an official ``temporalio`` worker runs ``RemoteCallerWorkflow`` in the tests.
OFFICIAL_QUEUE = "nomad-worker-official"
