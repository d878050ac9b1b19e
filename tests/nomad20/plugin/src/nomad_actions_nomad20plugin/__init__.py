"""A test plugin written against nomad-lab 2.0.0. The entry points live in ``entry_points``:
the workflow module's package is imported inside temporalio's sandbox, where importing
``nomad.config`` is not allowed."""
