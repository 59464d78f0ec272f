"""Hook specifications and the plugin manager that loads runtime plugins."""
