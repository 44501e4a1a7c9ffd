"""Gradio user interface: thin callbacks over the workbench services."""
