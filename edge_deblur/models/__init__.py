"""Architectures (torch). Importing this package imports torch; the runtime never does."""
from .registry import ARCHS, build_model, deploy_spec, resolve_spec, to_deploy, validate_spec

__all__ = ["ARCHS", "build_model", "deploy_spec", "resolve_spec", "to_deploy", "validate_spec"]
