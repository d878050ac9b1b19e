"""Example NOMAD action plugin for nomad-actions."""
