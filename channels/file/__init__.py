"""File connectors: the ``file_drop`` source (polls a folder) and the ``file_writer`` destination."""

from __future__ import annotations

from typing import Any

from channels.file.drop import FileDrop, FileDropConfig
from channels.file.writer import FileWriter, FileWriterConfig

__all__ = ["FileDrop", "FileDropConfig", "FileWriter", "FileWriterConfig", "register"]


def register(registry: Any) -> None:
    """Register the ``file_drop`` source and the ``file_writer`` destination types."""
    registry.add("source", "file_drop", FileDropConfig, FileDrop)
    registry.add("destination", "file_writer", FileWriterConfig, FileWriter)
