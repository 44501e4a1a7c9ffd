"""Visual-ARFT workbench: core services (store, protocol, agent runner, model backends)."""

__version__ = "0.1.0"
