"""The views: each route of ``serving.routes`` answered without Flask (``routes.Answer``)."""
