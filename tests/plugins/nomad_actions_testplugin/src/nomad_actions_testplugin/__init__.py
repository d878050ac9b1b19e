"""A NOMAD action plugin for the nomad-actions tests, written like a real plugin."""
