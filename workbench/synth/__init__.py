"""Synthetic offline demo worlds: MAT-Coding-mini, MAT-Search-mini and a scripted expert."""
