"""Pictures of what a model does (``vlkit viz``)."""
