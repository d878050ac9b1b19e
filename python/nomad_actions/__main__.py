"""``python -m nomad_actions``: the ``nomad-actions`` command line."""

from nomad_actions.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
