"""Training (torch). ``train(cfg)`` runs the loop described in loop.py."""
from .loop import train

__all__ = ["train"]
