"""The plugin code both benchmark workers run: one Pydantic activity per workflow (the seed
action's shape), a fan-out of short activities, and sync activities doing GIL-releasing work.

Deliberately free of `nomad_actions` imports, so the official worker process loads nothing
of ours; `bench_plugin.action` holds the `ActionEntryPoint` for our side.
"""
