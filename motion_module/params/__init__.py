"""Parameters: the one parameter object and its parsing from UI args, API dicts and infotext (request,
fields, coerce, infotext), the settings page (settings) and the panel's controls (ui_spec).

Imports nothing: each module is imported by name."""
