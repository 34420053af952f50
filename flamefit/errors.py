"""flamefit's error hierarchy.

Every error a user can cause derives from :class:`FlamefitError`; its message says what is wrong,
which file, and what to do. The CLI prints the message on one line and maps the class to an exit code.
"""

from __future__ import annotations


class FlamefitError(Exception):
    """Base class for errors a user can act on."""

    exit_code = 1


class ModelFileError(FlamefitError):
    """A model/asset file is missing, unreadable, damaged or of an unknown format."""

    exit_code = 3


class UnsafePickleError(ModelFileError):
    """A pickle asked for a class that flamefit does not allow (it may carry code)."""


class InputImageError(FlamefitError):
    """An input image is unreadable or unusable."""

    exit_code = 4


class FaceNotFound(FlamefitError):
    """No face was found in an image."""

    exit_code = 5


class VideoError(FlamefitError):
    """A video could not be read or written."""

    exit_code = 4


class ConfigError(FlamefitError):
    """A configuration file or option is invalid."""

    exit_code = 2


class NotYetImplemented(FlamefitError):
    """A feature that is planned but not implemented yet (never faked)."""

    exit_code = 6
