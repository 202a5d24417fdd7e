"""Configuration loading and validation: YAML with positions, placed issues (DESIGN.md §3.4)."""
