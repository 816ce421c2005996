"""Errors that the command line turns into one-line messages (exit code 2)."""

from __future__ import annotations


class OllaInputError(ValueError):
    """Bad input from the user: a file, a graph, a plan or an option.

    The message is one line, names the culprit, and says what to do next where
    there is something to do. The CLI prints it and exits with code 2.
    """


class GraphError(OllaInputError):
    """The graph itself is malformed (cycle, dangling input, tensor produced twice, ...)."""


class InvalidOrderError(GraphError):
    """An order is not a topological order of the graph it is checked against."""


class PlanError(OllaInputError):
    """A plan is corrupt, truncated, for another model, or overlaps buffers."""
