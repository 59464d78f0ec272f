"""The built-in runtimes, registered as plugins through the `apptasks` entry points."""
