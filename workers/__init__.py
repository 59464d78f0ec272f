"""The arq worker: executes on-demand runs and scheduled fires through a runtime."""
