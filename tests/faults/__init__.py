"""Fault-injection tests: kills, damaged checkpoints, non-finite steps, torn writes."""
