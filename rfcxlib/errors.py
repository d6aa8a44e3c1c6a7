"""Error classes. Every error rfcxlib raises on purpose is an :class:`RfcxError`.

Tests: tests/test_config.py
"""


class RfcxError(Exception):
    """Root of the errors rfcxlib raises on purpose."""


class ParameterError(RfcxError, ValueError):
    """A parameter has a value outside what the function or configuration accepts.

    The message quotes the parameter's name, the bad value and what was expected.
    """


class DataError(RfcxError):
    """A data file is missing, unreadable or inconsistent.

    The message names the file (and row, where there is one) and what was expected.
    """


def unknown_choice(kind: str, value, choices) -> ParameterError:
    """Build the error for a name that is not in a registry, listing the valid names."""
    valid = ", ".join(repr(c) for c in sorted(choices))
    return ParameterError(f"unknown {kind} {value!r}; valid choices: {valid}")


class RunFailed(RfcxError):
    """A run cannot start or go on: an unwritable or full disk, a busy run folder, data that do
    not fit the settings, a notebook that raised. The command exits with status 1 (2 is a usage
    error); a run that started has recorded the failure in ``series.json`` and ``summary.html``."""

    exit_status = 1


class ClusterError(RfcxError):
    """Several workers cannot train together: ``TF_CONFIG`` is malformed, the multi-worker strategy
    was created after TensorFlow had started, or a worker stopped answering. Exit status 1."""

    exit_status = 1
