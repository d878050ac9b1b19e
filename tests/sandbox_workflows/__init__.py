"""Workflow modules for tests/test_sandbox.py (sandboxed: not passed through)."""
