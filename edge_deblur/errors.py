"""Typed errors. Library code raises these with a message naming the bad value and the way out;
only the CLI turns them into exit codes."""


class EdgeDeblurError(Exception):
    """Base class: a user-facing problem with a clear message."""

    exit_code = 2


class ConfigError(EdgeDeblurError):
    """A YAML file, override or spec is wrong (unknown key, bad type, bad value)."""


class DatasetError(EdgeDeblurError):
    """A dataset folder is missing, empty, unpaired or holds unreadable files."""


class ModelError(EdgeDeblurError):
    """A model file or checkpoint is missing, corrupt, or for another architecture."""


class InputError(EdgeDeblurError):
    """A frame or argument has the wrong shape, dtype or value."""


class SourceError(EdgeDeblurError):
    """A source or sink URI cannot be opened (missing camera, unreadable video, bad scheme)."""


class BackendError(EdgeDeblurError):
    """A backend is unavailable here (no GPU, no TensorRT) or failed to run."""


class ProfileInUseError(BackendError):
    """Every optimization profile of a TensorRT engine is held by an open pipeline of the backend:
    another context on one of them would break TensorRT's one-profile-per-context rule, so the
    stream does not fall back to the backend's own context either (it runs on profile 0)."""


class ClusterError(EdgeDeblurError):
    """A compute cluster (Ray) cannot be reached or refused the job."""


class DependencyError(EdgeDeblurError):
    """An optional dependency is missing; the message names the extra to install."""


def require(module: str, extra: str):
    """Import an optional dependency or raise DependencyError naming the pip extra."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise DependencyError(
            f"{module!r} is not installed ({e}); install it with: pip install 'edge-deblur[{extra}]'"
        ) from e


class SinkWriteError(SourceError):
    """Writing an output failed (disk full, I/O error); the message says what was kept."""

    exit_code = 3


class SourceLostError(SourceError):
    """A live source stopped delivering frames and every reconnect attempt failed."""

    exit_code = 4
