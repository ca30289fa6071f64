"""Flask blueprints: thin views that route to the inference core."""
