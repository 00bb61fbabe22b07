"""The one exception users see for bad input data."""


class DataError(ValueError):
    """A problem with an input file or dataset description; the message names the file and the fix."""
