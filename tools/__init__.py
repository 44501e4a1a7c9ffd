"""Agent tools: the sandboxed Python image tool and the search tool.

Tools never import Gradio, `workbench` or `trainers`: they are plain typed
functions and small classes that the agent runner and TRL both call.
"""
