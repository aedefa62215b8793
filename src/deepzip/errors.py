"""The exception families deepzip raises.

Every error a user can trigger with bad input or a bad file is one of these, with a message that
says what was wrong and what is allowed. Programming errors stay ordinary Python exceptions.
"""


class DeepzipError(Exception):
    """Base class of every deepzip error."""


class DataError(DeepzipError):
    """A data set file is malformed (wrong magic, truncated, inconsistent counts)."""


class DataNotFoundError(DataError):
    """A data set could not be found locally nor downloaded."""


class FormatError(DeepzipError):
    """A deepzip file (.dz) is malformed, truncated, corrupted or of an unsupported version."""


class CheckpointError(DeepzipError):
    """A checkpoint or run file (safetensors model/state file, run JSON) is malformed or does not fit."""
