"""Services: what the views call. They add and flush, never commit."""
