"""Where answers can come from (routes, data sources, their endpoints) and how healthy each is."""
