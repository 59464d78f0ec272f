"""The built-in runtimes, each registered as a plugin through the `apptasks` entry points."""
