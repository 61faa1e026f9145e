"""Workflows shipped as examples (README "Workflows"): load them with PYTHON_HANDLER_MODULES=examples.trip,
examples.escalation."""
