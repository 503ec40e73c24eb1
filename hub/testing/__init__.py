"""Shared test support for the hub and for plugin authors.

``hub.testing.conformance`` holds the conformance suite every connector runs against its
sandbox twin. Import the module you need; this package imports nothing, so using one
helper never pulls in pytest.
"""
