"""A NOMAD action plugin for the worker process tests (tests/test_worker_process.py).

Its activities record which worker process ran them in marker files, so the tests can
tell the processes apart, kill the right one and check what finished.
"""
