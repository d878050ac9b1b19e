"""Imported with `workflow.unsafe.imports_passed_through()` by the sandbox tests."""

VALUE = 42
