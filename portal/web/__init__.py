"""Pages that belong to no single area: the landing page, health checks and error pages."""
